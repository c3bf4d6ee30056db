//! Loom models of the core's lock-free parts: the remote-free list and the
//! futex lock of user space.
//!
//! `src/remote.rs` is compiled here against loom's atomics. Each model checks
//! that every object handed to the list is accounted for exactly once: taken
//! by the owner, or refused (orphaned) and then freed through the domain lock.
//! One models the whole hand-back of a slice: the owner closes the list and
//! walks it outside the lock, then splices it under the lock, while other
//! threads free into the slice (see `closing_and_walking_outside_the_lock_loses_nothing`).
//!
//! `src/futex.rs` is compiled against loom's atomics and a futex built of a
//! loom mutex and condition variable (a wait sleeps only if the word still
//! holds the expected value, checked under the mutex that a wake takes, as
//! the kernel does). The models check mutual exclusion (a loom `UnsafeCell`
//! reports any overlapping access) and that no waiter sleeps forever (loom
//! reports a deadlock if every thread is blocked).

#[path = "../src/remote.rs"]
#[allow(dead_code)]
mod remote;

#[path = "../src/futex.rs"]
#[allow(dead_code)]
mod futex;

mod sync {
    pub(crate) use loom::hint::spin_loop;
    pub(crate) use loom::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
    use loom::sync::{Condvar, Mutex};

    /// One poll before sleeping keeps the models small.
    pub(crate) const LOCK_SPINS: u32 = 1;

    loom::lazy_static! {
        /// The futex table of the model: one queue serves every word.
        static ref FUTEX: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
    }

    pub(crate) fn futex_wait(word: &AtomicU32, expected: u32) {
        let queue = FUTEX.0.lock().unwrap();
        if word.load(Ordering::SeqCst) == expected {
            drop(FUTEX.1.wait(queue).unwrap());
        }
    }

    pub(crate) fn futex_wake_one(_word: &AtomicU32) {
        let _queue = FUTEX.0.lock().unwrap();
        FUTEX.1.notify_one();
    }
}

use loom::cell::UnsafeCell;
use loom::sync::{Arc, Mutex};
use loom::thread;
use remote::{Link, Push, RemoteList, Taken, Walked, LINK_REGION, ORPHAN};

/// A region of the model, aligned to its size as a slice is, holding
/// `count` objects of 16 bytes: the region's address and the objects.
fn objects(count: usize) -> (usize, Vec<usize>) {
    let layout = std::alloc::Layout::from_size_align(LINK_REGION, LINK_REGION).unwrap();
    // SAFETY: a non-zero size.
    let base = unsafe { std::alloc::alloc_zeroed(layout) } as usize;
    assert_ne!(base, 0);
    (base, (0..count).map(|i| base + 16 * i).collect())
}

/// Frees a region made by `objects`.
fn release(base: usize) {
    let layout = std::alloc::Layout::from_size_align(LINK_REGION, LINK_REGION).unwrap();
    // SAFETY: allocated by `objects` with this layout, freed once.
    unsafe { std::alloc::dealloc(base as *mut u8, layout) };
}

/// Appends the objects of a taken list to `into`, following exactly as
/// many links as the list's word counted, and checks that the chain then
/// ends with the region's end marker.
fn collect(taken: Taken, into: &mut Vec<usize>) {
    let mut link = taken.first as usize;
    for _ in 0..taken.count {
        into.push(link);
        // SAFETY: every link on a list is a live object of the model.
        link = unsafe { Link::next(link as *mut Link, KEY) };
    }
    if taken.count != 0 {
        assert_eq!(link, Link::end_of(taken.first as usize), "the list ends at its count");
    }
}

/// The link key of the model: links are stored encoded, as in the core.
const KEY: usize = 0x5a5a_0000_1234_0000;

fn owned_list() -> RemoteList {
    RemoteList { head: sync::AtomicUsize::new(0) }
}

fn sorted(mut v: Vec<usize>) -> Vec<usize> {
    v.sort_unstable();
    v
}

#[test]
fn concurrent_pushes_are_all_taken_once() {
    loom::model(|| {
        let list = Arc::new(owned_list());
        let (base, objs) = objects(3);
        let handles: Vec<_> = objs[..2]
            .iter()
            .map(|&object| {
                let list = list.clone();
                thread::spawn(move || {
                    // SAFETY: each thread pushes its own object.
                    assert_eq!(unsafe { list.push(object as *mut Link, KEY) }, Push::Pushed);
                })
            })
            .collect();
        // The owner drains while the others push, then pushes one of its own
        // frees through the same path as a remote thread would.
        let mut taken = Vec::new();
        collect(list.take(base), &mut taken);
        // SAFETY: the owner's own object.
        assert_eq!(unsafe { list.push(objs[2] as *mut Link, KEY) }, Push::Pushed);
        for handle in handles {
            handle.join().unwrap();
        }
        collect(list.take(base), &mut taken);
        assert_eq!(sorted(taken), sorted(objs.clone()));
        release(base);
    });
}

#[test]
fn chains_racing_a_take_and_a_close_are_taken_whole_or_refused_whole() {
    // A heap's batch of remote frees goes onto the list as one chain
    // (`Heap::flush_remote`): two freeing threads push a chain of two and a
    // chain of one while the owner takes the list once and then closes it.
    // Every object must come out exactly once: taken or walked by the
    // owner, or refused with its whole chain (then freed through the lock).
    loom::model(|| {
        let list = Arc::new(owned_list());
        let (base, objs) = objects(3);
        // The chain objs[1] -> objs[0], linked by its thread before the push.
        let chain = {
            let list = list.clone();
            let (first, last) = (objs[1], objs[0]);
            thread::spawn(move || {
                // SAFETY: the thread's own objects.
                unsafe { Link::set_next(first as *mut Link, last, KEY) };
                // SAFETY: as above; `first` leads to `last`.
                match unsafe { list.push_chain(first as *mut Link, last as *mut Link, 2, KEY) } {
                    Push::Pushed => Vec::new(),
                    Push::Orphaned => vec![first, last],
                }
            })
        };
        let single = {
            let list = list.clone();
            let object = objs[2];
            thread::spawn(move || {
                // SAFETY: the thread's own object.
                match unsafe { list.push_chain(object as *mut Link, object as *mut Link, 1, KEY) } {
                    Push::Pushed => Vec::new(),
                    Push::Orphaned => vec![object],
                }
            })
        };
        let mut seen = Vec::new();
        collect(list.take(base), &mut seen);
        collect(list.orphan(base), &mut seen);
        seen.extend(chain.join().unwrap());
        seen.extend(single.join().unwrap());
        assert_eq!(list.head.load(sync::Ordering::Relaxed), ORPHAN);
        assert_eq!(sorted(seen), sorted(objs.clone()));
        release(base);
    });
}

#[test]
fn push_racing_orphan_is_either_collected_or_refused() {
    loom::model(|| {
        let list = Arc::new(owned_list());
        let (base, objs) = objects(2);
        let pusher = {
            let list = list.clone();
            let objs = objs.clone();
            thread::spawn(move || {
                objs.iter()
                    .filter(|&&object| {
                        // SAFETY: the pusher owns its objects.
                        let outcome = unsafe { list.push(object as *mut Link, KEY) };
                        outcome == Push::Orphaned
                    })
                    .copied()
                    .collect::<Vec<_>>()
            })
        };
        let mut collected = Vec::new();
        collect(list.orphan(base), &mut collected);
        let refused = pusher.join().unwrap();
        assert!(list.is_orphaned());
        // Nothing may be left on an orphaned list: nobody would drain it.
        assert_eq!(list.head.load(sync::Ordering::Relaxed), ORPHAN);
        let mut all = collected;
        all.extend(refused);
        assert_eq!(sorted(all), sorted(objs.clone()));
        release(base);
    });
}

#[test]
fn refused_frees_follow_the_slice_to_its_next_owner() {
    // The freeing thread retries under the domain lock (`free_pending`): if
    // the slice was adopted meanwhile it pushes to the new owner, otherwise
    // the domain frees it. The old owner closes the list without the lock
    // and splices under it; a new owner adopts under the lock.
    loom::model(|| {
        let (slice, objs) = ModelSlice::new(1);
        let slice = Arc::new(slice);
        let object = objs[0];
        let freer = {
            let slice = slice.clone();
            thread::spawn(move || slice.free_remote(object))
        };
        slice.give_back(); // the old owner
        {
            let _domain = slice.domain.lock().unwrap();
            slice.remote.adopt(); // a new owner takes it
        }
        freer.join().unwrap();
        // The new owner collects its remote frees.
        let mut seen = slice.free_objects();
        collect(slice.remote.take(slice.base), &mut seen);
        assert_eq!(seen, vec![object]);
        assert_ne!(slice.remote.head.load(sync::Ordering::Relaxed), ORPHAN);
    });
}

#[test]
fn a_retried_free_races_the_next_owner_closing_the_list() {
    // An object refused while the slice had no owner waits in a heap's
    // pending batch; the slice is adopted by a new owner, which gives it
    // back again, closing its list without the lock, while the batch is
    // flushed under the lock (`free_pending` pushes first): the object is
    // either pushed before the swap (on the detached list, spliced) or
    // refused after it (freed under the lock), never lost or counted twice.
    loom::model(|| {
        let (slice, objs) = ModelSlice::new(1);
        let slice = Arc::new(slice);
        slice.remote.head.store(ORPHAN, sync::Ordering::Relaxed); // nobody owns it
        let object = objs[0];
        // SAFETY: the object is the freer's; refused, it stays the freer's.
        assert_eq!(unsafe { slice.remote.push(object as *mut Link, KEY) }, Push::Orphaned);
        {
            let _domain = slice.domain.lock().unwrap();
            slice.remote.adopt(); // the next owner
        }
        let flusher = {
            let slice = slice.clone();
            thread::spawn(move || {
                let _domain = slice.domain.lock().unwrap();
                slice.free_pending(object);
            })
        };
        slice.give_back(); // the next owner gives the slice back
        flusher.join().unwrap();
        assert_eq!(slice.free_objects(), vec![object]);
        assert_eq!(slice.local.with(|local| unsafe { (*local).used }), 0, "counted free once");
        assert_eq!(slice.remote.head.load(sync::Ordering::Relaxed), ORPHAN);
    });
}

/// A slice of the model: its remote list, and its free list and count of
/// objects in use, which the owner holds without a lock until it closes the
/// remote list, and the domain lock holder holds after that (as
/// `SliceMeta::free` and `SliceMeta::used`). A loom `UnsafeCell`, so loom
/// reports any access to them that is not ordered after the previous one.
struct ModelSlice {
    remote: RemoteList,
    local: UnsafeCell<Local>,
    /// The domain lock.
    domain: Mutex<()>,
    /// The slice's memory: one region aligned to its size, as a slice is,
    /// so that the links pass the walk's checks.
    base: usize,
}

/// What the holder of a slice holds: its free list and count.
struct Local {
    /// Head of the free list: an object, or the slice's end marker.
    free: usize,
    /// Objects handed out and not back on `free`.
    used: u32,
}

// SAFETY: the model's threads share the slice as the allocator's do; loom
// checks every access to `local`.
unsafe impl Sync for ModelSlice {}
unsafe impl Send for ModelSlice {}

impl ModelSlice {
    /// A slice owned by the model's main thread, with `count` objects all
    /// handed out; returns it and the objects.
    fn new(count: usize) -> (Self, Vec<usize>) {
        let (base, objects) = objects(count);
        let slice = ModelSlice {
            remote: owned_list(),
            local: UnsafeCell::new(Local { free: Link::end_of(base), used: count as u32 }),
            domain: Mutex::new(()),
            base,
        };
        (slice, objects)
    }

    /// Frees `object` onto the free list, as the owner's fast path does
    /// and as `Domain::free_locked` does under the lock: the caller holds
    /// the list.
    fn free_local(&self, object: usize) {
        self.local.with_mut(|local| {
            // SAFETY: the caller holds the list; the object is its own.
            let local = unsafe { &mut *local };
            unsafe { Link::set_next(object as *mut Link, local.free, KEY) };
            local.free = object;
            local.used -= 1;
        });
    }

    /// A free by a thread that does not own the slice: the push, and when
    /// it is refused, the domain lock.
    fn free_remote(&self, object: usize) {
        // SAFETY: the caller's object, freed once.
        if unsafe { self.remote.push(object as *mut Link, KEY) } == Push::Orphaned {
            let _domain = self.domain.lock().unwrap();
            self.free_pending(object);
        }
    }

    /// `Domain::free_pending`, domain lock held: the push again (the slice
    /// may have an owner by now, which may be closing the list this very
    /// moment), and when it is refused, the free list. Returns whether the
    /// object was pushed.
    fn free_pending(&self, object: usize) -> bool {
        // SAFETY: the caller's object, freed once.
        match unsafe { self.remote.push(object as *mut Link, KEY) } {
            Push::Pushed => true,
            Push::Orphaned => {
                // Adoption takes the lock, which the caller holds.
                assert!(self.remote.is_orphaned());
                self.free_local(object);
                false
            }
        }
    }

    /// `Domain::free_chain_pending`, domain lock held: a heap's batch of
    /// objects of this slice, linked from `first` to `last`, whose push
    /// found the slice orphaned, pushed whole again (the slice may have an
    /// owner by now), or, refused, spliced whole onto the free list.
    /// Returns whether the chain was pushed.
    fn free_chain_pending(&self, first: usize, last: usize, count: u32) -> bool {
        // SAFETY: the caller's chain of objects, freed once.
        match unsafe { self.remote.push_chain(first as *mut Link, last as *mut Link, count, KEY) } {
            Push::Pushed => true,
            Push::Orphaned => {
                assert!(self.remote.is_orphaned());
                self.local.with_mut(|local| {
                    // SAFETY: the lock holder holds the list of an orphaned
                    // slice; the chain is the caller's.
                    let local = unsafe { &mut *local };
                    unsafe { Link::set_next(last as *mut Link, local.free, KEY) };
                    local.free = first;
                    local.used -= count;
                });
                false
            }
        }
    }

    /// An owner gives the slice back: closes and walks the remote list
    /// without the lock (`Domain::close`), then splices the walk onto the
    /// free list under it (`Domain::take_back`).
    fn give_back(&self) {
        let detached = self.remote.orphan(self.base);
        // SAFETY: detached by the swap; objects of the slice, ours alone.
        let walked = unsafe { Walked::walk(detached, KEY) }.expect("links of pushed objects are sound");
        let _domain = self.domain.lock().unwrap();
        self.local.with_mut(|local| {
            // SAFETY: the lock holder holds the list of an orphaned slice.
            let local = unsafe { &mut *local };
            // SAFETY: the walked objects are ours alone.
            local.free = unsafe { walked.prepend_to(local.free, KEY) };
            local.used -= walked.count;
        });
    }

    /// The objects on the free list, checking every link as an allocation
    /// would.
    fn free_objects(&self) -> Vec<usize> {
        self.local.with(|local| {
            // SAFETY: every thread but the caller has finished.
            let mut link = unsafe { (*local).free };
            let mut seen = Vec::new();
            while !Link::is_end(link) {
                seen.push(link);
                // SAFETY: objects of the model's region.
                let next = unsafe { Link::next(link as *mut Link, KEY) };
                assert!(Link::same_region(link, next), "a link left the slice");
                link = next;
            }
            assert_eq!(link, Link::end_of(self.base));
            seen
        })
    }
}

impl Drop for ModelSlice {
    fn drop(&mut self) {
        release(self.base);
    }
}

#[test]
fn closing_and_walking_outside_the_lock_loses_nothing() {
    // The hand-back of `Domain::close` and `Domain::take_back`: the owner
    // frees one object of its own (no lock), closes the remote list with
    // the orphan swap and walks what it detached (no lock), then splices the
    // walk onto the free list and subtracts its count under the domain lock.
    // Two other threads free three objects meanwhile: each push lands on
    // the detached list, or is refused and freed under the lock, before or
    // after the splice. At the end every object is on the free list exactly
    // once and the count of objects in use is 0; loom also checks that the
    // free list and count are never touched by two threads without an
    // order between them (the swap's Release matters here: the lock-side
    // free must see the owner's own free).
    loom::model(|| {
        let (slice, objs) = ModelSlice::new(4);
        let slice = Arc::new(slice);
        let freers: Vec<_> = [vec![objs[0], objs[1]], vec![objs[2]]]
            .into_iter()
            .map(|mine| {
                let slice = slice.clone();
                thread::spawn(move || {
                    for object in mine {
                        slice.free_remote(object);
                    }
                })
            })
            .collect();
        // The owner, holding the slice: a free of its own, without a lock;
        // then it gives the slice back.
        slice.free_local(objs[3]);
        slice.give_back();
        for freer in freers {
            freer.join().unwrap();
        }
        assert_eq!(slice.remote.head.load(sync::Ordering::Relaxed), ORPHAN);
        assert_eq!(sorted(slice.free_objects()), sorted(objs.clone()));
        assert_eq!(slice.local.with(|local| unsafe { (*local).used }), 0, "every object counted free once");
    });
}

#[test]
fn a_retried_chain_races_the_next_owner_adopting_and_closing_the_list() {
    // A batch of two remote frees whose push found the slice orphaned waits
    // in a heap's chains (`Heap::free_orphaned_chain`); the domain takes it
    // under the lock (`free_chain_pending`) while a new owner adopts the
    // slice under the lock and gives it back again, closing its list
    // without the lock. The chain is pushed whole onto the new owner's
    // list (and spliced by its hand-back) or spliced whole onto the free
    // list, never split, lost or counted twice.
    loom::model(|| {
        let (slice, objs) = ModelSlice::new(2);
        let slice = Arc::new(slice);
        slice.remote.head.store(ORPHAN, sync::Ordering::Relaxed); // nobody owns it
        let (first, last) = (objs[1], objs[0]);
        // SAFETY: the chain is the freer's; refused, it stays the freer's.
        unsafe { Link::set_next(first as *mut Link, last, KEY) };
        // SAFETY: as above.
        assert_eq!(unsafe { slice.remote.push_chain(first as *mut Link, last as *mut Link, 2, KEY) }, Push::Orphaned);
        let flusher = {
            let slice = slice.clone();
            thread::spawn(move || {
                let _domain = slice.domain.lock().unwrap();
                slice.free_chain_pending(first, last, 2)
            })
        };
        {
            let _domain = slice.domain.lock().unwrap();
            slice.remote.adopt(); // the next owner
        }
        slice.give_back(); // which gives the slice back
        flusher.join().unwrap();
        assert_eq!(sorted(slice.free_objects()), sorted(objs.clone()));
        assert_eq!(slice.local.with(|local| unsafe { (*local).used }), 0, "counted free once");
        assert_eq!(slice.remote.head.load(sync::Ordering::Relaxed), ORPHAN);
    });
}

/// Pushes three objects of a model slice one by one (the list runs
/// objs[2] -> objs[1] -> objs[0] -> end), lets `overwrite` write over the
/// middle object's link, as a use after free would, closes the list and
/// returns the object the walk refuses.
#[cfg(not(strata_unhardened))]
fn walk_refusal(overwrite: impl FnOnce(&ModelSlice, &[usize])) -> (usize, Vec<usize>) {
    let (slice, objs) = ModelSlice::new(3);
    // SAFETY: the model's objects, pushed once each.
    unsafe {
        for &object in &objs {
            assert_eq!(slice.remote.push(object as *mut Link, KEY), Push::Pushed);
        }
    }
    overwrite(&slice, &objs);
    let detached = slice.remote.orphan(slice.base);
    assert_eq!(detached.count, 3);
    // SAFETY: detached by the swap.
    let refused = unsafe { Walked::walk(detached, KEY) }.unwrap_err();
    (refused, objs)
}

// The walk's checks are hardening: an unhardened build follows links as is.
#[cfg(not(strata_unhardened))]
#[test]
fn a_walk_refuses_a_link_that_leaves_the_slice() {
    loom::model(|| {
        // A plain pointer over the middle link.
        let (refused, objs) = walk_refusal(|_, objs| {
            // SAFETY: a word of the model's region.
            unsafe { std::ptr::write_unaligned(objs[1] as *mut usize, objs[0]) }
        });
        assert_eq!(refused, objs[1]);
    });
}

// The walk's checks are hardening: an unhardened build follows links as is.
#[cfg(not(strata_unhardened))]
#[test]
fn a_walk_refuses_a_chain_that_ends_before_its_count() {
    // An overwritten link that leads to the end marker early (a write of
    // the encoded end, or any odd value): the chain would hold fewer
    // objects than the list's word counts, and the slice's count of
    // objects in use would go wrong.
    loom::model(|| {
        let (refused, objs) = walk_refusal(|slice, objs| {
            // SAFETY: a word of the model's region.
            unsafe { Link::set_next(objs[1] as *mut Link, Link::end_of(slice.base), KEY) }
        });
        assert_eq!(refused, objs[1]);
    });
}

/// A counter that only the futex lock protects.
struct Guarded {
    word: sync::AtomicU32,
    count: loom::cell::UnsafeCell<u32>,
}

impl Guarded {
    fn new() -> Self {
        Guarded { word: sync::AtomicU32::new(futex::UNLOCKED), count: loom::cell::UnsafeCell::new(0) }
    }

    /// Adds one under the lock, with a read and a write loom can see overlap.
    fn increment(&self) {
        futex::lock(&self.word);
        let value = self.count.with(|count| unsafe { *count });
        self.count.with_mut(|count| unsafe { *count = value + 1 });
        // SAFETY: taken above.
        unsafe { futex::unlock(&self.word) };
    }
}

#[test]
fn futex_lock_excludes_and_wakes_two_threads() {
    loom::model(|| {
        let guarded = Arc::new(Guarded::new());
        let other = guarded.clone();
        let handle = thread::spawn(move || other.increment());
        guarded.increment();
        handle.join().unwrap();
        assert_eq!(guarded.count.with(|count| unsafe { *count }), 2);
        assert_eq!(guarded.word.load(sync::Ordering::Relaxed), futex::UNLOCKED);
    });
}

#[test]
fn futex_lock_wakes_every_sleeper_of_three_threads() {
    let mut model = loom::model::Builder::new();
    // Three threads that may each sleep: bound the preemptions so the model
    // finishes; every interleaving with up to 3 is explored.
    model.preemption_bound = Some(3);
    model.check(|| {
        let guarded = Arc::new(Guarded::new());
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let other = guarded.clone();
                thread::spawn(move || other.increment())
            })
            .collect();
        guarded.increment();
        for handle in handles {
            handle.join().unwrap();
        }
        assert_eq!(guarded.count.with(|count| unsafe { *count }), 3);
    });
}

#[test]
fn futex_try_lock_fails_while_held() {
    loom::model(|| {
        let guarded = Arc::new(Guarded::new());
        assert!(futex::try_lock(&guarded.word));
        let other = guarded.clone();
        let handle = thread::spawn(move || futex::try_lock(&other.word));
        assert!(!handle.join().unwrap());
        // SAFETY: taken above.
        unsafe { futex::unlock(&guarded.word) };
        assert!(futex::try_lock(&guarded.word));
    });
}
