//! Loom models of the remote-free list, the core's lock-free part.
//!
//! `src/remote.rs` is compiled here against loom's atomics. Each model checks
//! that every object handed to the list is accounted for exactly once: taken
//! by the owner, or refused (orphaned) and then freed through the domain lock.

#[path = "../src/remote.rs"]
#[allow(dead_code)]
mod remote;

mod sync {
    pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};
}

use loom::sync::{Arc, Mutex};
use loom::thread;
use remote::{Link, Push, RemoteList, ORPHAN};

/// Objects for a model run, leaked as raw pointers (loom runs many times).
fn objects(count: usize) -> Vec<usize> {
    (0..count).map(|_| Box::into_raw(Box::new(Link { next: std::ptr::null_mut() })) as usize).collect()
}

/// Frees the objects of a model run.
fn release(objects: &[usize]) {
    for &object in objects {
        // SAFETY: made by `objects`, freed once.
        drop(unsafe { Box::from_raw(object as *mut Link) });
    }
}

fn collect(mut link: *mut Link, into: &mut Vec<usize>) {
    while !link.is_null() {
        into.push(link as usize);
        // SAFETY: every link on a list is a live object of the model.
        link = unsafe { Link::next(link) };
    }
}

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
        let objs = objects(3);
        let handles: Vec<_> = objs[..2]
            .iter()
            .map(|&object| {
                let list = list.clone();
                thread::spawn(move || {
                    // SAFETY: each thread pushes its own object.
                    assert_eq!(unsafe { list.push(object as *mut Link) }, Push::Pushed);
                })
            })
            .collect();
        // The owner drains while the others push, then pushes one of its own
        // frees through the same path as a remote thread would.
        let mut taken = Vec::new();
        collect(list.take(), &mut taken);
        // SAFETY: the owner's own object.
        assert_eq!(unsafe { list.push(objs[2] as *mut Link) }, Push::Pushed);
        for handle in handles {
            handle.join().unwrap();
        }
        collect(list.take(), &mut taken);
        assert_eq!(sorted(taken), sorted(objs.clone()));
        release(&objs);
    });
}

#[test]
fn push_racing_orphan_is_either_collected_or_refused() {
    loom::model(|| {
        let list = Arc::new(owned_list());
        let objs = objects(2);
        let pusher = {
            let list = list.clone();
            let objs = objs.clone();
            thread::spawn(move || {
                objs.iter()
                    .filter(|&&object| {
                        // SAFETY: the pusher owns its objects.
                        let outcome = unsafe { list.push(object as *mut Link) };
                        outcome == Push::Orphaned
                    })
                    .copied()
                    .collect::<Vec<_>>()
            })
        };
        let mut collected = Vec::new();
        collect(list.orphan(), &mut collected);
        let refused = pusher.join().unwrap();
        assert!(list.is_orphaned());
        // Nothing may be left on an orphaned list: nobody would drain it.
        assert_eq!(list.head.load(sync::Ordering::Relaxed), ORPHAN);
        let mut all = collected;
        all.extend(refused);
        assert_eq!(sorted(all), sorted(objs.clone()));
        release(&objs);
    });
}

#[test]
fn refused_frees_follow_the_slice_to_its_next_owner() {
    // The freeing thread retries under the domain lock: if the slice was
    // adopted meanwhile it pushes to the new owner, otherwise the domain
    // frees it. The old owner orphans, and a new owner adopts, under the lock.
    loom::model(|| {
        let list = Arc::new(owned_list());
        let lock = Arc::new(Mutex::new(Vec::<usize>::new())); // objects freed by the domain
        let object = objects(1)[0];
        let freer = {
            let list = list.clone();
            let lock = lock.clone();
            thread::spawn(move || {
                // SAFETY: the freer owns the object.
                if unsafe { list.push(object as *mut Link) } == Push::Orphaned {
                    let mut domain = lock.lock().unwrap();
                    if list.is_orphaned() {
                        domain.push(object);
                    } else {
                        // SAFETY: as above.
                        assert_eq!(unsafe { list.push(object as *mut Link) }, Push::Pushed);
                    }
                }
            })
        };
        let mut seen = Vec::new();
        {
            let _domain = lock.lock().unwrap();
            collect(list.orphan(), &mut seen); // old owner gives the slice back
        }
        {
            let _domain = lock.lock().unwrap();
            list.adopt(); // a new owner takes it
        }
        freer.join().unwrap();
        collect(list.take(), &mut seen);
        seen.extend(lock.lock().unwrap().iter().copied());
        assert_eq!(seen, vec![object]);
        assert_ne!(list.head.load(sync::Ordering::Relaxed), ORPHAN);
        release(&[object]);
    });
}
