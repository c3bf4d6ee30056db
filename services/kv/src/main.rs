//! strata-kv: a small RESP2 key-value server with an append-only log.

mod log;
mod resp;
mod store;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use resp::{parse, reply, Parse};
use store::{Db, Next, SHARDS};

#[cfg(feature = "alloc-strata")]
#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata::new();

#[cfg(all(feature = "alloc-mimalloc", not(feature = "alloc-strata")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "alloc-strata")]
mod alloc_front {
    pub const NAME: &str = "strata";
    pub fn info(s: &mut String) {
        use std::fmt::Write;
        let st = super::GLOBAL.stats();
        let _ = write!(s, "used_memory:{}\r\n", st.bytes_live);
        let _ = write!(s, "strata_bytes_live:{}\r\n", st.bytes_live);
        let _ = write!(s, "strata_bytes_resident:{}\r\n", st.bytes_resident);
        let _ = write!(s, "strata_bytes_mapped:{}\r\n", st.bytes_mapped);
        let _ = write!(s, "strata_pages_mapped:{}\r\n", st.pages_mapped);
        let _ = write!(s, "strata_pages_released:{}\r\n", st.pages_released);
        let _ = write!(s, "strata_huge_allocations:{}\r\n", st.huge_allocations);
        let _ = write!(
            s,
            "strata_slices:clean={},partial={},full={},dirty={},purged={}\r\n",
            st.slices_clean, st.slices_partial, st.slices_full, st.slices_dirty, st.slices_purged
        );
        let _ = write!(s, "strata_purges:{}\r\n", st.purges);
        let _ = write!(s, "strata_hole_pages:{}\r\n", st.hole_pages);
        let _ = write!(s, "strata_hole_walked_unlocked:{}\r\n", st.hole_walked_unlocked);
        let _ = write!(s, "strata_hole_filled_unlocked:{}\r\n", st.hole_filled_unlocked);
        let _ = write!(s, "strata_hole_fills_unlocked:{}\r\n", st.hole_fills_unlocked);
        let _ = write!(s, "strata_parts_collapsed:{}\r\n", st.parts_collapsed);
        let _ = write!(s, "strata_remote_frees:{}\r\n", st.remote_frees);
        let _ = write!(s, "strata_lock_acquisitions:{}\r\n", st.lock_acquisitions);
        let _ = write!(s, "strata_lock_contended:{}\r\n", st.lock_contended);
        let _ = write!(s, "strata_flushes:{}\r\n", st.flushes);
        let _ = write!(s, "strata_refills:{}\r\n", st.refills);
        let _ = write!(s, "strata_huge_pages:{}\r\n", u8::from(super::GLOBAL.domain().source().huge_pages()));
        // One line per size class in use: its slices (those in thread
        // caches among them) and objects live, for reading fragmentation.
        for (class, c) in st.classes.iter().enumerate().filter(|(_, c)| c.slices > 0) {
            let size = strata::size_class::class_size(class);
            let _ = write!(
                s,
                "strata_class_{size}:slices={},cached={},objects_live={},capacity={}\r\n",
                c.slices,
                c.cached_slices,
                c.objects_live,
                c.slices * strata::size_class::objects_per_slice(class)
            );
        }
    }
    pub fn after_compact() {
        super::GLOBAL.purge();
    }
    /// Gives the calling thread's cache back and runs the delayed purge if
    /// it is due; `true` while memory still waits for the purge delay (the
    /// caller idles on and calls again), so that what the last burst freed
    /// goes back to the OS though no request comes to trigger the purge.
    pub fn thread_idle() -> bool {
        super::GLOBAL.release_thread_cache();
        super::GLOBAL.purge_if_due()
    }
    /// Strata's batching heaps hold frees of objects other threads
    /// allocated until a batch fills; this hands them over.
    pub fn release_cache() {
        super::GLOBAL.release_thread_cache();
    }
    /// Strata's own answer: a block on a sparse slab that no thread
    /// allocates from.
    pub fn defrag_hint(block: *const u8) -> bool {
        super::GLOBAL.defrag_hint(block).unwrap_or(false)
    }
    /// `--huge-pages`: the allocator backs the memory in use with
    /// transparent huge pages from now on.
    pub fn huge_pages() -> Result<(), &'static str> {
        super::GLOBAL.domain().source().set_huge_pages(true);
        Ok(())
    }
}

#[cfg(all(feature = "alloc-mimalloc", not(feature = "alloc-strata")))]
mod alloc_front {
    pub const NAME: &str = "mimalloc";
    extern "C" {
        fn mi_collect(force: bool);
    }
    pub fn info(s: &mut String) {
        use std::fmt::Write;
        let _ = write!(s, "used_memory:{}\r\n", crate::store::proc_status("VmRSS"));
    }
    pub fn after_compact() {
        // SAFETY: mi_collect has no preconditions.
        unsafe { mi_collect(true) }
    }
    pub fn thread_idle() -> bool {
        // SAFETY: as above; collects the calling thread's heap. mimalloc
        // has no call that says whether memory waits for its purge delay,
        // so the thread does not ask to be called again.
        unsafe { mi_collect(false) };
        false
    }
    pub fn release_cache() {
        // A free of another thread's object goes straight to its page's
        // list of frees from other threads: nothing is held back.
    }
    /// mimalloc has no call that says whether a block's page is sparse:
    /// the repack moves every block.
    pub fn defrag_hint(_block: *const u8) -> bool {
        true
    }
    pub fn huge_pages() -> Result<(), &'static str> {
        Err("--huge-pages needs the Strata build (mimalloc takes MIMALLOC_* variables)")
    }
}

#[cfg(not(any(feature = "alloc-strata", feature = "alloc-mimalloc")))]
mod alloc_front {
    pub const NAME: &str = "system";
    extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    pub fn info(s: &mut String) {
        use std::fmt::Write;
        let _ = write!(s, "used_memory:{}\r\n", crate::store::proc_status("VmRSS"));
    }
    pub fn after_compact() {
        // SAFETY: glibc's malloc_trim has no preconditions.
        unsafe {
            malloc_trim(0);
        }
    }
    pub fn thread_idle() -> bool {
        // glibc's per-thread cache (tcache) is small and has no call to
        // give it back; its arenas are trimmed by `after_compact`.
        false
    }
    pub fn release_cache() {
        // glibc's per-thread cache keeps a few chunks of each size, of
        // whichever thread, and has no call to give them back.
    }
    /// glibc has no call that says whether moving a chunk would help: the
    /// repack moves every block.
    pub fn defrag_hint(_block: *const u8) -> bool {
        true
    }
    pub fn huge_pages() -> Result<(), &'static str> {
        Err("--huge-pages needs the Strata build")
    }
}

/// Largest request (all its frames' bytes) a connection may buffer.
const MAX_REQUEST: usize = resp::MAX_BULK + (1 << 20);
/// Replies are flushed once this much is pending.
const OUT_FLUSH: usize = 1 << 20;

/// Most bytes a connection reads at a time.
const READ_ROOM: usize = 64 << 10;

/// The reply buffer a connection starts with, and goes back to when idle.
const REPLY_ROOM: usize = 16 << 10;

const HELP: &str = "\
strata-kv: a RESP2 key-value server with an append-only log, on 127.0.0.1

usage: strata-kv [--port PORT] [--dir DIR] [--compact-bytes N] [--no-defrag] [--huge-pages]

  --port PORT         TCP port on 127.0.0.1 (default 6379; 0 picks one)
  --dir DIR           data directory for the log and snapshots (default ./kv-data)
  --compact-bytes N   compact once the log since the last snapshot exceeds
                      max(N, snapshot size) bytes (default 67108864)
  --no-defrag         compaction does not move live keys and values into
                      fresh allocations (by default COMPACT does, and a
                      background compaction does once the store has
                      shrunk to a quarter, shard by shard, if its
                      snapshot is at most 4 MiB per shard); it still
                      resizes the index
  --huge-pages        the allocator backs the memory it has in use with
                      transparent huge pages (Strata build only)
  --help              this text

Commands: PING SET GET DEL MSET MGET INCR LPUSH LPOP LRANGE DBSIZE FLUSHALL
INFO [memory] CONFIG GET (empty) COMMAND (empty) ECHO COMPACT SHUTDOWN QUIT
";

fn fail(msg: String) -> ! {
    eprintln!("strata-kv: {msg}");
    std::process::exit(1)
}

fn main() {
    let mut port: u16 = 6379;
    let mut dir = PathBuf::from("kv-data");
    let mut compact_bytes: u64 = 64 << 20;
    let mut defrag = true;
    let mut argv = std::env::args().skip(1);
    while let Some(a) = argv.next() {
        let mut val = |what: &str| argv.next().unwrap_or_else(|| fail(format!("{what} needs a value (see --help)")));
        match a.as_str() {
            "--help" | "-h" => {
                print!("{HELP}");
                return;
            }
            "--port" => port = val("--port").parse().unwrap_or_else(|_| fail("bad --port".into())),
            "--no-defrag" => defrag = false,
            "--huge-pages" => alloc_front::huge_pages().unwrap_or_else(|e| fail(e.into())),
            "--dir" => dir = PathBuf::from(val("--dir")),
            "--compact-bytes" => {
                compact_bytes = val("--compact-bytes").parse().unwrap_or_else(|_| fail("bad --compact-bytes".into()))
            }
            _ => fail(format!("unknown option {a} (see --help)")),
        }
    }
    if let Err(e) = std::fs::create_dir_all(&dir) {
        fail(format!("cannot open directory {}: {e}", dir.display()));
    }
    let rec = log::recover(&dir).unwrap_or_else(|e| fail(format!("cannot recover from {}: {e}", dir.display())));
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| fail(format!("cannot bind 127.0.0.1:{port}: {e}")));
    let seg_id = rec.seg_id();
    let log = log::new_log(&rec, compact_bytes, defrag);
    let shards = rec.shards;
    assert_eq!(shards.len(), SHARDS);
    let db = Arc::new(Db {
        shards: shards.into_iter().map(Mutex::new).collect(),
        log,
        allocator: alloc_front::NAME,
        alloc_info: alloc_front::info,
    });
    let hooks = log::AllocatorHooks {
        after_compact: alloc_front::after_compact,
        thread_idle: alloc_front::thread_idle,
        release_cache: alloc_front::release_cache,
        defrag_hint: alloc_front::defrag_hint,
    };
    if let Err(e) = log::start(db.clone(), dir.clone(), seg_id, hooks) {
        fail(format!("cannot open the log in {}: {e}", dir.display()));
    }
    let addr = listener.local_addr().unwrap();
    println!("strata-kv: listening on {addr} (allocator {}, {} keys recovered)", alloc_front::NAME, db.dbsize());
    let _ = std::io::stdout().flush();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let db = db.clone();
        let _ = std::thread::Builder::new().name("kv-conn".into()).stack_size(256 << 10).spawn(move || serve(&db, stream));
        alloc_front::thread_idle();
    }
}

/// Runs when a connection ends, after its buffers are freed: gives the
/// thread's allocator cache back and has the log thread watch the purge
/// delay, so that what the connection freed goes back to the OS though no
/// other request comes.
struct ConnectionEnd<'a>(&'a Db);

impl Drop for ConnectionEnd<'_> {
    fn drop(&mut self) {
        alloc_front::thread_idle();
        self.0.log.note_memory_freed();
    }
}

fn serve(db: &Db, mut stream: TcpStream) {
    let _end = ConnectionEnd(db);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(log::IDLE_AFTER));
    let mut idle = false;
    // Received bytes are `buf[..filled]`. The rest of `buf` is initialized
    // room to read into: zeroed once when it grows, not on every read.
    let mut buf: Vec<u8> = vec![0; READ_ROOM];
    let mut filled = 0;
    let mut out: Vec<u8> = Vec::with_capacity(REPLY_ROOM);
    loop {
        let mut start = 0;
        let mut wait = 0;
        let mut close = false;
        let mut shutdown = false;
        loop {
            match parse(&buf[start..filled]) {
                Parse::Request(args, used) => {
                    start += used;
                    match db.execute(args, &mut out) {
                        Next::Wait(seq) => wait = wait.max(seq),
                        Next::Close => close = true,
                        Next::Shutdown => shutdown = true,
                    }
                    if close || shutdown {
                        break;
                    }
                    if out.len() >= OUT_FLUSH {
                        db.log.wait(wait);
                        if stream.write_all(&out).is_err() {
                            return;
                        }
                        out.clear();
                    }
                }
                Parse::Incomplete => break,
                Parse::Error(e) => {
                    reply::error(&mut out, &format!("ERR {e}"));
                    close = true;
                    break;
                }
            }
        }
        // Group commit: acknowledge only once the writes are durable.
        db.log.wait(wait);
        if shutdown {
            db.log.sync_all();
            eprintln!("strata-kv: shutdown");
            std::process::exit(0);
        }
        if !out.is_empty() {
            if stream.write_all(&out).is_err() {
                return;
            }
            out.clear();
            if out.capacity() > 4 << 20 {
                out = Vec::with_capacity(REPLY_ROOM);
            }
        }
        if close {
            return;
        }
        if start > 0 {
            buf.copy_within(start..filled, 0);
            filled -= start;
        }
        if filled == 0 && buf.len() > 4 << 20 {
            buf = vec![0; READ_ROOM];
        }
        if filled >= MAX_REQUEST {
            reply::error(&mut out, "ERR Protocol error: request too large");
            let _ = stream.write_all(&out);
            return;
        }
        let end = filled + READ_ROOM.min(MAX_REQUEST - filled);
        if buf.len() < end {
            buf.resize(end, 0);
        }
        loop {
            match stream.read(&mut buf[filled..end]) {
                Ok(0) => return,
                Ok(n) => {
                    filled += n;
                    idle = false;
                    break;
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    // No request for a while: give the thread's cached
                    // memory back, then keep waiting; once more after each
                    // idle period while the allocator has memory waiting
                    // for its purge delay.
                    if !idle {
                        // An idle connection keeps only the buffers it
                        // started with, whatever the largest request and
                        // reply it carried.
                        if filled == 0 && buf.len() > READ_ROOM {
                            buf = vec![0; READ_ROOM];
                        }
                        if out.capacity() > REPLY_ROOM {
                            out = Vec::with_capacity(REPLY_ROOM);
                        }
                        idle = !alloc_front::thread_idle();
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}
