//! The lock the domain uses, as a small trait the environment implements.
//!
//! Linux user space uses [`FutexLock`], which spins briefly and then sleeps
//! on a futex; `no_std` uses [`SpinLock`], a `spin` mutex. The kernel module
//! implements [`RawLock`] with the kernel's own spinlock.

/// A mutual-exclusion lock with no data.
///
/// Kernel locks are initialised at run time, at their final address, where
/// they register with lockdep: such a lock is built unready and made ready by
/// [`RawLock::init`] once it is pinned. Locks that can be built in a `const`
/// (for a `static`) implement [`ConstLock`] as well.
///
/// # Safety
/// After `init`, `lock` and a successful `try_lock` must give the caller
/// exclusive ownership until the matching `unlock`, with acquire/release
/// ordering, so that writes made while holding the lock are visible to the
/// next holder.
pub unsafe trait RawLock {
    /// Makes the lock usable. Called once, before any other method, when the
    /// lock will not move again. Locks that need no set-up keep the default.
    ///
    /// # Safety
    /// The lock must not move afterwards, and `init` must not race with any
    /// other use of it.
    unsafe fn init(&self) {}

    /// Takes the lock, waiting as long as needed.
    fn lock(&self);

    /// Takes the lock if it is free.
    fn try_lock(&self) -> bool;

    /// Releases the lock.
    ///
    /// # Safety
    /// The caller must hold the lock. After `fork`, the child may release a
    /// lock its parent's forking thread held.
    unsafe fn unlock(&self);
}

/// A lock that can be built unlocked in a `const`, and needs no
/// [`RawLock::init`].
///
/// # Safety
/// `UNLOCKED` must be a ready, unlocked lock.
pub unsafe trait ConstLock: RawLock {
    /// An unlocked lock.
    const UNLOCKED: Self;
}

#[cfg(all(feature = "spin", feature = "std"))]
type Relax = YieldAfterSpin;
#[cfg(all(feature = "spin", not(feature = "std")))]
type Relax = spin::relax::Spin;

/// Yields the CPU between attempts: on a machine with fewer cores than
/// threads a pure spin would burn the lock holder's time slice.
#[cfg(all(feature = "spin", feature = "std"))]
pub struct YieldAfterSpin;

#[cfg(all(feature = "spin", feature = "std"))]
impl spin::RelaxStrategy for YieldAfterSpin {
    fn relax() {
        extern crate std;
        std::thread::yield_now();
    }
}

/// A test-and-set spinlock from the `spin` crate.
#[cfg(feature = "spin")]
pub struct SpinLock(spin::mutex::SpinMutex<(), Relax>);

#[cfg(feature = "spin")]
// SAFETY: a new `SpinMutex` is unlocked and needs no set-up.
unsafe impl ConstLock for SpinLock {
    const UNLOCKED: Self = SpinLock(spin::mutex::SpinMutex::new(()));
}

#[cfg(feature = "spin")]
// SAFETY: `SpinMutex` provides exclusive, acquire/release-ordered locking;
// forgetting the guard keeps it held until `force_unlock`.
unsafe impl RawLock for SpinLock {

    #[inline]
    fn lock(&self) {
        core::mem::forget(self.0.lock());
    }

    #[inline]
    fn try_lock(&self) -> bool {
        match self.0.try_lock() {
            Some(guard) => {
                core::mem::forget(guard);
                true
            }
            None => false,
        }
    }

    #[inline]
    unsafe fn unlock(&self) {
        // SAFETY: the caller holds the lock.
        unsafe { self.0.force_unlock() }
    }
}

/// A mutex that spins briefly, then sleeps on a futex until it is released:
/// the domain lock of the std front and the shim (see `futex.rs`).
#[cfg(all(feature = "std", target_os = "linux"))]
pub struct FutexLock(core::sync::atomic::AtomicU32);

#[cfg(all(feature = "std", target_os = "linux"))]
// SAFETY: a zero word is an unlocked lock and needs no set-up.
unsafe impl ConstLock for FutexLock {
    const UNLOCKED: Self = FutexLock(core::sync::atomic::AtomicU32::new(crate::futex::UNLOCKED));
}

#[cfg(all(feature = "std", target_os = "linux"))]
// SAFETY: `futex::lock` and `futex::try_lock` take the word from UNLOCKED
// with acquire ordering, only one thread can do so until `futex::unlock`
// stores UNLOCKED with release ordering (the loom model checks it).
unsafe impl RawLock for FutexLock {
    #[inline]
    fn lock(&self) {
        crate::futex::lock(&self.0)
    }

    #[inline]
    fn try_lock(&self) -> bool {
        crate::futex::try_lock(&self.0)
    }

    #[inline]
    unsafe fn unlock(&self) {
        // SAFETY: forwarded.
        unsafe { crate::futex::unlock(&self.0) }
    }
}

/// Holds a [`RawLock`] for a scope.
pub(crate) struct Guard<'a, L: RawLock>(&'a L);

impl<'a, L: RawLock> Guard<'a, L> {
    /// Guards `lock`, which the caller has just taken.
    pub(crate) fn adopt(lock: &'a L) -> Self {
        Guard(lock)
    }
}

impl<L: RawLock> Drop for Guard<'_, L> {
    fn drop(&mut self) {
        // SAFETY: the guard was made by taking the lock.
        unsafe { self.0.unlock() }
    }
}
