use std::alloc::{GlobalAlloc, Layout};

static A: strata::Strata = strata::Strata::new();

#[test]
fn smoke() {
    unsafe {
        let mut ptrs = Vec::new();
        for i in 0..100_000usize {
            let size = 1 + (i * 7919) % 5000;
            let l = Layout::from_size_align(size, 8).unwrap();
            let p = A.alloc(l);
            assert!(!p.is_null());
            p.write_bytes((i % 251) as u8, size);
            ptrs.push((p, l, i));
        }
        for &(p, l, i) in &ptrs {
            for j in 0..l.size() {
                assert_eq!(*p.add(j), (i % 251) as u8);
            }
            A.dealloc(p, l);
        }
        let big = Layout::from_size_align(300_000, 8).unwrap();
        let p = A.alloc(big);
        p.write_bytes(1, 300_000);
        A.dealloc(p, big);
        let huge = Layout::from_size_align(10 << 20, 4096).unwrap();
        let p = A.alloc(huge);
        p.write_bytes(1, 10 << 20);
        A.dealloc(p, huge);
    }
    let s = A.stats();
    eprintln!("{s}");
    assert_eq!(s.bytes_live, 0);
}
