//! The append-only log: group commit, segments, snapshots and recovery.
//!
//! Files in the data directory:
//! - `FORMAT`: the line [`FORMAT`], written when the directory is first
//!   used; a directory whose log files lack it, or carry another, is
//!   refused rather than replayed with the wrong checksum (which would read
//!   its first record as a torn tail and drop the rest).
//! - `seg-N.log`: records `[len u32][check u32][seq u64][payload]`, where
//!   `check` is CRC-32 (`crc32fast`) over the payload then the sequence
//!   number, and the payload is `[op u8][nargs u32]` then each argument as
//!   `[len u32][bytes]`.
//! - `snap-N.snap`: the index as it was after every segment below `N`; per
//!   shard, the sequence number `S` read under the shard's lock, so records
//!   with `seq < S` on that shard are already in it and are skipped on replay.
//!
//! Writers encode a record, then (under the lock of every shard they touch)
//! take a sequence number and append it to the pending batch. The log thread
//! writes and fsyncs the batch, then publishes the highest durable sequence
//! number; replies wait for it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};

use crate::store::{apply_record, Db, Shard, Value, SHARDS};

pub const OP_SET: u8 = 1;
pub const OP_DEL: u8 = 2;
pub const OP_LPUSH: u8 = 3;
pub const OP_LPOP: u8 = 4;
pub const OP_FLUSH: u8 = 5;

const SNAP_MAGIC: &[u8; 8] = b"SKVSNAP1";
const SNAP_END: &[u8; 8] = b"SKVEND!!";
const MAX_RECORD: usize = 1 << 31;

/// The contents of the data directory's `FORMAT` file. Until it existed,
/// records carried FNV-1a checksums, computed a byte at a time: at 4 KiB
/// values that was most of the server's work per write.
pub const FORMAT: &str = "strata-kv log 2: crc32\n";

/// CRC-32 of `bytes`, continuing from `crc`, the CRC-32 of what came
/// before them (0 for nothing).
fn crc32(crc: u32, bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial(crc);
    hasher.update(bytes);
    hasher.finalize()
}

/// A record encoded outside any lock; `append` adds the sequence number.
pub struct Record {
    payload: Vec<u8>,
    sum: u32,
}

pub fn encode(op: u8, args: &[&[u8]]) -> Record {
    let size = 5 + args.iter().map(|a| 4 + a.len()).sum::<usize>();
    let mut payload = Vec::with_capacity(size);
    payload.push(op);
    payload.extend_from_slice(&(args.len() as u32).to_le_bytes());
    for a in args {
        payload.extend_from_slice(&(a.len() as u32).to_le_bytes());
        payload.extend_from_slice(a);
    }
    let sum = crc32(0, &payload);
    Record { payload, sum }
}

fn decode(payload: &[u8]) -> Option<(u8, Vec<&[u8]>)> {
    let op = *payload.first()?;
    let n = u32::from_le_bytes(payload.get(1..5)?.try_into().ok()?) as usize;
    let mut pos = 5;
    let mut args = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let len = u32::from_le_bytes(payload.get(pos..pos + 4)?.try_into().ok()?) as usize;
        pos += 4;
        args.push(payload.get(pos..pos + len)?);
        pos += len;
    }
    Some((op, args))
}

struct LogState {
    pending: Vec<u8>,
    next_seq: u64,
    durable_seq: u64,
    compact_requested: bool,
    /// A thread gave memory back to the allocator and went away (a closed
    /// connection): the idle log thread watches the purge delay again.
    memory_freed: bool,
}

/// Shared log state; the files belong to the log and compaction threads.
pub struct Log {
    state: Mutex<LogState>,
    work: Condvar,
    done: Condvar,
    pub compact_bytes: u64,
    pub defrag: bool,
    pub active_bytes: AtomicU64,
    pub snap_bytes: AtomicU64,
    pub compacting: AtomicBool,
    pub compactions: AtomicU64,
    /// How long requests may have waited for the last repack, in
    /// microseconds: the time `COMPACT`'s held every shard's lock, or the
    /// longest a background one held one shard's.
    pub pause_us: AtomicU64,
    /// The longest such wait since the server started, in microseconds.
    pub pause_max_us: AtomicU64,
    /// Compactions that repacked the store.
    pub repacks: AtomicU64,
    pub batches: AtomicU64,
}

impl Log {
    /// Appends `rec` to the pending batch; call with the locks of the
    /// shards it touches held. Returns its sequence number.
    pub fn append(&self, rec: Record) -> u64 {
        let mut st = self.state.lock().unwrap();
        let seq = st.next_seq;
        st.next_seq += 1;
        let check = crc32(rec.sum, &seq.to_le_bytes());
        let was_empty = st.pending.is_empty();
        st.pending.extend_from_slice(&(rec.payload.len() as u32).to_le_bytes());
        st.pending.extend_from_slice(&check.to_le_bytes());
        st.pending.extend_from_slice(&seq.to_le_bytes());
        st.pending.extend_from_slice(&rec.payload);
        drop(st);
        if was_empty {
            self.work.notify_one();
        }
        seq
    }

    /// The next sequence number to be handed out.
    pub fn next_seq(&self) -> u64 {
        self.state.lock().unwrap().next_seq
    }

    /// Waits until record `seq` is durable.
    pub fn wait(&self, seq: u64) {
        let mut st = self.state.lock().unwrap();
        while st.durable_seq < seq {
            st = self.done.wait(st).unwrap();
        }
    }

    /// Waits until everything appended so far is durable.
    pub fn sync_all(&self) {
        let seq = self.next_seq() - 1;
        self.wait(seq);
    }

    /// Says that a thread has given its memory back to the allocator and
    /// is going away (a connection that closed). The log thread, if idle,
    /// then looks after the allocator's purge delay again, as after its own
    /// last write: with no request to come, nothing else would give that
    /// memory back to the OS.
    pub fn note_memory_freed(&self) {
        self.state.lock().unwrap().memory_freed = true;
        self.work.notify_one();
    }

    /// Asks for a compaction and waits for one to finish.
    pub fn compact_now(&self) {
        let before = self.compactions.load(Ordering::Acquire);
        let target = before + if self.compacting.load(Ordering::Acquire) { 2 } else { 1 };
        self.state.lock().unwrap().compact_requested = true;
        self.work.notify_one();
        while self.compactions.load(Ordering::Acquire) < target {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("seg-{id:016}.log"))
}
fn snap_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("snap-{id:016}.snap"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn die(what: &str, e: io::Error) -> ! {
    eprintln!("strata-kv: {what}: {e}");
    std::process::exit(1)
}

/// Lists `(prefix-N.ext)` ids in `dir`.
fn list(dir: &Path, prefix: &str, ext: &str) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_suffix(ext)) {
            if let Ok(id) = rest.parse() {
                ids.push(id);
            }
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}
fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}
/// Reads a byte string `put_bytes` wrote, into an allocation of its exact
/// length. The length is not trusted with more than 1 MiB of room before
/// the bytes are there to read.
fn read_bytes(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let len = read_u32(r)? as usize;
    let mut v = Vec::with_capacity(len.min(1 << 20));
    r.take(len as u64).read_to_end(&mut v)?;
    if v.len() != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    v.shrink_to_fit();
    Ok(v)
}

/// Reads the entry `put_entry` wrote at the front of `r`, each byte string
/// in an allocation of its exact length.
fn read_entry(r: &mut impl Read) -> io::Result<(Vec<u8>, Value)> {
    let key = read_bytes(r)?;
    let mut tag = [0; 1];
    r.read_exact(&mut tag)?;
    let value = match tag[0] {
        0 => Value::Str(read_bytes(r)?),
        1 => {
            let n = read_u32(r)?;
            let mut list = std::collections::VecDeque::with_capacity(n.min(1 << 16) as usize);
            for _ in 0..n {
                list.push_back(read_bytes(r)?);
            }
            Value::List(list)
        }
        _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "bad value tag")),
    };
    Ok((key, value))
}

fn load_snapshot(path: &Path, shards: &mut [Shard], floor: &mut [u64; SHARDS]) -> io::Result<()> {
    let mut r = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut magic = [0; 8];
    r.read_exact(&mut magic)?;
    if &magic != SNAP_MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad snapshot magic"));
    }
    for (i, shard) in shards.iter_mut().enumerate() {
        floor[i] = read_u64(&mut r)?;
        let count = read_u64(&mut r)?;
        for _ in 0..count {
            let (key, value) = read_entry(&mut r)?;
            shard.insert(key, value);
        }
    }
    r.read_exact(&mut magic)?;
    if &magic != SNAP_END {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad snapshot end"));
    }
    Ok(())
}

/// Replays one segment; truncates a torn tail. Returns the highest seq seen.
fn replay_segment(path: &Path, shards: &mut [Shard], floor: &[u64; SHARDS]) -> io::Result<u64> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let size = file.metadata()?.len();
    let mut r = BufReader::with_capacity(1 << 20, &file);
    let mut pos = 0u64;
    let mut max_seq = 0;
    let mut payload = Vec::new();
    loop {
        let mut hdr = [0u8; 16];
        if pos + 16 > size || r.read_exact(&mut hdr).is_err() {
            break;
        }
        let len = u32::from_le_bytes(hdr[0..4].try_into().unwrap()) as usize;
        let check = u32::from_le_bytes(hdr[4..8].try_into().unwrap());
        let seq = u64::from_le_bytes(hdr[8..16].try_into().unwrap());
        if len > MAX_RECORD || pos + 16 + len as u64 > size {
            break;
        }
        payload.clear();
        payload.resize(len, 0);
        if r.read_exact(&mut payload).is_err() {
            break;
        }
        if crc32(crc32(0, &payload), &seq.to_le_bytes()) != check {
            break;
        }
        let Some((op, args)) = decode(&payload) else { break };
        apply_record(shards, op, &args, seq, floor);
        max_seq = max_seq.max(seq);
        pos += 16 + len as u64;
    }
    if pos < size {
        eprintln!("strata-kv: {}: dropping a torn tail of {} bytes", path.display(), size - pos);
        file.set_len(pos)?;
        file.sync_all()?;
    }
    Ok(max_seq)
}

/// What recovery found, to start the log threads from.
pub struct Recovered {
    pub shards: Vec<Shard>,
    next_seq: u64,
    seg_id: u64,
    active_bytes: u64,
    snap_bytes: u64,
}

/// Reads the snapshot and segments in `dir`.
pub fn recover(dir: &Path) -> io::Result<Recovered> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "tmp") {
            fs::remove_file(&p)?;
        }
    }
    let mut shards: Vec<Shard> = (0..SHARDS).map(|_| Shard::default()).collect();
    let mut floor = [0u64; SHARDS];
    let snaps = list(dir, "snap-", ".snap")?;
    let segs = list(dir, "seg-", ".log")?;
    check_format(dir, !snaps.is_empty() || !segs.is_empty())?;
    let base = snaps.last().copied().unwrap_or(0);
    let mut snap_bytes = 0;
    if let Some(&k) = snaps.last() {
        let p = snap_path(dir, k);
        load_snapshot(&p, &mut shards, &mut floor).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
        snap_bytes = fs::metadata(&p)?.len();
    }
    let mut max_seq = floor.iter().copied().max().unwrap_or(0);
    let mut active_bytes = 0;
    for &id in &segs {
        let p = seg_path(dir, id);
        if id < base {
            fs::remove_file(&p)?;
            continue;
        }
        max_seq = max_seq.max(replay_segment(&p, &mut shards, &floor)?);
        active_bytes += fs::metadata(&p)?.len();
    }
    for &id in &snaps {
        if id < base {
            fs::remove_file(snap_path(dir, id))?;
        }
    }
    let seg_id = segs.last().copied().unwrap_or(0).max(base) + 1;
    Ok(Recovered { shards, next_seq: max_seq.max(floor.iter().copied().max().unwrap_or(0)) + 1, seg_id, active_bytes, snap_bytes })
}

/// Checks the directory's `FORMAT` file against [`FORMAT`], or, in a
/// directory with no log files yet (`has_files` false), writes it.
fn check_format(dir: &Path, has_files: bool) -> io::Result<()> {
    let path = dir.join("FORMAT");
    match fs::read(&path) {
        Ok(found) if found == FORMAT.as_bytes() => Ok(()),
        Ok(found) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: a log of another format ({:?}, this server writes {:?})",
                path.display(),
                String::from_utf8_lossy(&found).trim_end(),
                FORMAT.trim_end()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound && has_files => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("log files with no FORMAT file: written by a strata-kv before {:?}", FORMAT.trim_end()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let temporary = dir.join("FORMAT.tmp");
            let mut file = File::create(&temporary)?;
            file.write_all(FORMAT.as_bytes())?;
            file.sync_all()?;
            fs::rename(&temporary, &path)?;
            sync_dir(dir)
        }
        Err(e) => Err(e),
    }
}

/// Builds the log from what recovery found, and returns the shards.
pub fn new_log(rec: &Recovered, compact_bytes: u64, defrag: bool) -> Log {
    Log {
        state: Mutex::new(LogState {
            pending: Vec::new(),
            next_seq: rec.next_seq,
            durable_seq: rec.next_seq - 1,
            compact_requested: false,
            memory_freed: false,
        }),
        work: Condvar::new(),
        done: Condvar::new(),
        compact_bytes,
        defrag,
        active_bytes: AtomicU64::new(rec.active_bytes),
        snap_bytes: AtomicU64::new(rec.snap_bytes),
        compacting: AtomicBool::new(false),
        compactions: AtomicU64::new(0),
        pause_us: AtomicU64::new(0),
        pause_max_us: AtomicU64::new(0),
        repacks: AtomicU64::new(0),
        batches: AtomicU64::new(0),
    }
}

/// The largest batch buffer the log writer keeps for the next batch while
/// it is busy: both buffers together hold at most twice this between
/// batches, and nothing once the log idles.
const BATCH_KEPT: usize = 8 << 20;

/// How long a thread waits for work (the log writer for records, a
/// connection for a request) before it gives its allocator cache back; it
/// does so once per idle period, and again after each further period while
/// the allocator says memory waits for its purge delay.
pub const IDLE_AFTER: std::time::Duration = std::time::Duration::from_millis(200);

/// What the log and compaction threads ask of the allocator the server is
/// built with.
#[derive(Clone, Copy)]
pub struct AllocatorHooks {
    /// After a compaction: give everything freed back to the OS.
    pub after_compact: fn(),
    /// On an idle thread: give its cache back and run the delayed purge if
    /// it is due; `true` while memory still waits for the purge delay.
    pub thread_idle: fn() -> bool,
    /// Give the calling thread's cache back, so that its frees of objects
    /// other threads allocated take effect, without purging.
    pub release_cache: fn(),
    /// Whether moving the block at this address (the start of a live
    /// allocation) into a fresh one would help the allocator give memory
    /// back.
    pub defrag_hint: fn(*const u8) -> bool,
}

/// Starts the log writer and the compactor. `seg_id` comes from recovery.
pub fn start(db: Arc<Db>, dir: PathBuf, rec_seg_id: u64, hooks: AllocatorHooks) -> io::Result<()> {
    let mut seg_id = rec_seg_id;
    let mut file = OpenOptions::new().create(true).append(true).open(seg_path(&dir, seg_id))?;
    sync_dir(&dir)?;
    // A segment id to compact below, and whether `COMPACT` asked for it.
    let (tx, rx) = mpsc::channel::<(u64, bool)>();
    {
        let db = db.clone();
        let dir = dir.clone();
        std::thread::Builder::new().name("kv-compact".into()).spawn(move || {
            // The most keys, values and list items a compaction has seen
            // since the last repack.
            let mut objects_peak = 0;
            for (id, asked) in rx {
                if let Err(e) = compact(&db, &dir, id, asked, hooks, &mut objects_peak) {
                    die("compaction", e);
                }
            }
        })?;
    }
    std::thread::Builder::new().name("kv-log".into()).spawn(move || {
        let log = &db.log;
        let mut batch = Vec::new();
        let mut idle = false;
        loop {
            let (last, rotate) = {
                let mut st = log.state.lock().unwrap();
                while st.pending.is_empty() && (!st.compact_requested || log.compacting.load(Ordering::Acquire)) {
                    if std::mem::take(&mut st.memory_freed) {
                        idle = false;
                    }
                    st = if st.compact_requested {
                        log.work.wait_timeout(st, std::time::Duration::from_millis(10)).unwrap().0
                    } else if !idle {
                        // Nothing to write for a while: give this thread's
                        // allocator cache back (outside the lock), and look
                        // again after another period while the allocator
                        // has memory waiting for its purge delay.
                        let (mut st, timeout) = log.work.wait_timeout(st, IDLE_AFTER).unwrap();
                        if timeout.timed_out() && st.pending.is_empty() {
                            // The two batch buffers keep the capacity of
                            // the largest batch (up to `BATCH_KEPT` each);
                            // an idle log holds none.
                            st.pending = Vec::new();
                            drop(st);
                            batch = Vec::new();
                            idle = !(hooks.thread_idle)();
                            log.state.lock().unwrap()
                        } else {
                            st
                        }
                    } else {
                        log.work.wait(st).unwrap()
                    };
                }
                idle = false;
                std::mem::swap(&mut st.pending, &mut batch);
                let rotate = st.compact_requested && !log.compacting.load(Ordering::Acquire);
                if rotate {
                    st.compact_requested = false;
                }
                (st.next_seq - 1, rotate)
            };
            if !batch.is_empty() {
                if let Err(e) = file.write_all(&batch).and_then(|_| file.sync_data()) {
                    die("log write", e);
                }
                log.active_bytes.fetch_add(batch.len() as u64, Ordering::Relaxed);
                log.batches.fetch_add(1, Ordering::Relaxed);
                // Under load the next batch is about as large: keep the
                // buffer, since regrowing it from empty costs a copy at
                // every doubling (at 4 KiB values, 14% of the server's
                // instructions with Strata, 22% with mimalloc). Only a
                // buffer a burst grew past `BATCH_KEPT` goes now; an idle
                // log drops both.
                batch.clear();
                if batch.capacity() > BATCH_KEPT {
                    batch = Vec::new();
                }
            }
            {
                let mut st = log.state.lock().unwrap();
                st.durable_seq = last;
            }
            log.done.notify_all();
            let threshold = log.compact_bytes.max(log.snap_bytes.load(Ordering::Relaxed));
            let due = log.active_bytes.load(Ordering::Relaxed) > threshold && !log.compacting.load(Ordering::Acquire);
            if rotate || due {
                // Everything up to `last` is in segments below the new one.
                seg_id += 1;
                file = match OpenOptions::new().create(true).append(true).open(seg_path(&dir, seg_id)) {
                    Ok(f) => f,
                    Err(e) => die("new segment", e),
                };
                if let Err(e) = sync_dir(&dir) {
                    die("new segment", e);
                }
                log.active_bytes.store(0, Ordering::Relaxed);
                log.compacting.store(true, Ordering::Release);
                let _ = tx.send((seg_id, rotate));
            }
        }
    })?;
    Ok(())
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// A background compaction repacks the store shard by shard
/// (`repack_by_shard`) once it holds at most 1/`REPACK_SHRINK` of the keys,
/// values and list items it held at the compaction after the last repack,
/// or at any compaction since: when most of the memory its objects took is
/// likely holes. Repacking costs copies of the live data and short waits
/// of the requests to the shard being repacked; in a store that is not
/// shrinking it would buy little. `COMPACT` always repacks, the whole
/// store at once (`repack`).
const REPACK_SHRINK: u64 = 4;

/// A background compaction repacks only a store whose snapshot is at most
/// this many bytes per shard, so that requests never wait long for a
/// repack nobody asked for: it holds one shard's lock at a time, for a copy
/// of what it moves of that shard. A larger store is repacked at a later
/// compaction, once it is small enough, or by `COMPACT`.
const REPACK_BACKGROUND_BYTES_PER_SHARD: u64 = 4 << 20;

/// Moves every key and value of `shards` into a fresh allocation of its
/// exact size, and every table into one sized to its live entries, and
/// returns how long requests waited for it: `COMPACT`'s repack.
///
/// With every shard locked (in index order, as every path that holds more
/// than one locks them), the entries are copied out into one buffer, all
/// of them freed, then allocated anew from the buffer: the allocator then
/// packs the survivors into as few slabs as they fill, the holes beside
/// objects the store does not own (the server's own) first. Moved one at
/// a time with no hint instead, each copy lands in a hole of a sparse slab
/// that still holds survivors not yet moved, and the slabs end about as
/// sparse as before: with Strata, after 90% of 100,000 keys of 16-byte
/// values were deleted, the 20,012 live 16-byte objects stayed on 8 slices
/// with room for 32,768. `release_cache` gives the thread's allocator cache
/// back. The cost is that every request waits while it runs; `INFO` shows
/// the last wait as `repack_pause_us`, the longest as
/// `repack_pause_max_us`.
fn repack(shards: &[Mutex<Shard>], release_cache: fn()) -> std::time::Duration {
    let mut guards: Vec<_> = shards.iter().map(|s| s.lock().unwrap()).collect();
    let started = std::time::Instant::now();
    let total: usize = guards.iter().flat_map(|g| g.iter()).map(|(k, v)| entry_len(k, v)).sum();
    let mut packed = Vec::with_capacity(total);
    let mut counts = Vec::with_capacity(guards.len());
    for g in guards.iter_mut() {
        counts.push(g.len());
        for (k, v) in g.iter() {
            put_entry(&mut packed, k, v);
        }
        // Frees the shard's keys, values and table.
        **g = Shard::default();
    }
    // The frees take effect in the allocator: this thread's cache holds
    // back frees of objects other threads allocated (with Strata, until a
    // batch fills), and their slabs would still look in use.
    release_cache();
    let mut rest = packed.as_slice();
    for (g, count) in guards.iter_mut().zip(counts) {
        let mut shard = Shard::with_capacity(count);
        for _ in 0..count {
            let (k, v) = read_entry(&mut rest).expect("repack reads back the entries it wrote");
            shard.insert(k, v);
        }
        **g = shard;
    }
    debug_assert!(rest.is_empty());
    started.elapsed()
}

/// Moves the keys, values and list items of `shards` that the allocator
/// advises moving (`hooks.defrag_hint`) into fresh allocations of their
/// exact size, and every table and list into one sized to its live
/// entries, one shard at a time; returns the longest time it held one
/// shard's lock, which is how long a request may have waited for it.
///
/// The hint is what makes moving one object at a time work (see `repack`
/// for what happens without it). Each copy is allocated from the slab the
/// calling thread's allocator cache holds; with Strata the hint names only
/// objects on sparse slabs other than those, so the slab the copies go to
/// keeps its own objects and fills, and the slabs the objects leave empty,
/// but for objects the store does not own. Allocators with no such hint
/// move everything. `release_cache` hands the thread's frees over at the
/// end. A background compaction's repack.
fn repack_by_shard(shards: &[Mutex<Shard>], hooks: AllocatorHooks) -> std::time::Duration {
    let hint = hooks.defrag_hint;
    let mut longest = std::time::Duration::ZERO;
    for shard in shards {
        let mut guard = shard.lock().unwrap();
        let started = std::time::Instant::now();
        let old = std::mem::take(&mut *guard);
        let mut fresh = Shard::with_capacity(old.len());
        for (key, value) in old {
            let value = match value {
                Value::Str(s) => Value::Str(moved(s, hint)),
                Value::List(list) => Value::List(list.into_iter().map(|item| moved(item, hint)).collect()),
            };
            fresh.insert(moved(key, hint), value);
        }
        *guard = fresh;
        longest = longest.max(started.elapsed());
    }
    (hooks.release_cache)();
    longest
}

/// `bytes`, in a fresh allocation of its exact length when the allocator
/// advises moving it or it has room to spare, else as it is.
fn moved(bytes: Vec<u8>, hint: fn(*const u8) -> bool) -> Vec<u8> {
    if bytes.capacity() != bytes.len() || (bytes.capacity() != 0 && hint(bytes.as_ptr())) {
        bytes.as_slice().to_vec()
    } else {
        bytes
    }
}

/// Appends `key` and `value` as a snapshot holds them: the key, then a
/// tag, 0 for a string and 1 for a list, then the string, or the list's
/// length and its items; every byte string is its length (`u32`) and bytes.
fn put_entry(out: &mut Vec<u8>, key: &[u8], value: &Value) {
    put_bytes(out, key);
    match value {
        Value::Str(s) => {
            out.push(0);
            put_bytes(out, s);
        }
        Value::List(l) => {
            out.push(1);
            out.extend_from_slice(&(l.len() as u32).to_le_bytes());
            for item in l {
                put_bytes(out, item);
            }
        }
    }
}

/// How many bytes `put_entry` appends for `key` and `value`.
fn entry_len(key: &[u8], value: &Value) -> usize {
    let strings = match value {
        Value::Str(s) => 4 + s.len(),
        Value::List(l) => 4 + l.iter().map(|item| 4 + item.len()).sum::<usize>(),
    };
    4 + key.len() + 1 + strings
}

/// Writes `snap-id`, then deletes the segments and snapshots below `id`,
/// then gives back memory left over from deleted keys; `asked` when the
/// `COMPACT` command asked for it, which always repacks (with defrag on).
/// `objects_peak` is the most keys, values and list items a compaction has
/// seen since the last repack, which this one updates.
fn compact(db: &Db, dir: &Path, id: u64, asked: bool, hooks: AllocatorHooks, objects_peak: &mut u64) -> io::Result<()> {
    let tmp = dir.join(format!("snap-{id:016}.tmp"));
    let mut w = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
    w.write_all(SNAP_MAGIC)?;
    let mut buf = Vec::new();
    // Keys, values and list items in the snapshot.
    let mut objects = 0u64;
    for shard in &db.shards {
        {
            let sh = shard.lock().unwrap();
            // Every record on this shard below `floor` is reflected here.
            let floor = db.log.next_seq();
            buf.extend_from_slice(&floor.to_le_bytes());
            buf.extend_from_slice(&(sh.len() as u64).to_le_bytes());
            for (k, v) in sh.iter() {
                put_entry(&mut buf, k, v);
                objects += 1 + match v {
                    Value::Str(_) => 1,
                    Value::List(l) => l.len() as u64,
                };
            }
        }
        w.write_all(&buf)?;
        buf.clear();
        buf.shrink_to(1 << 20);
    }
    drop(buf);
    w.write_all(SNAP_END)?;
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    let size = f.metadata()?.len();
    drop(f);
    fs::rename(&tmp, snap_path(dir, id))?;
    sync_dir(dir)?;
    for old in list(dir, "seg-", ".log")? {
        if old < id {
            fs::remove_file(seg_path(dir, old))?;
        }
    }
    for old in list(dir, "snap-", ".snap")? {
        if old < id {
            fs::remove_file(snap_path(dir, old))?;
        }
    }
    // Give back memory left over from deleted keys. When asked, or after a
    // mass delete of a small enough store (with defrag on), move keys and
    // values into fresh allocations, so that the survivors pack into fewer
    // slabs and pages instead of pinning sparse ones: all of them at once
    // when asked (`repack`), those the allocator names shard by shard in
    // the background (`repack_by_shard`). Otherwise, rebuild any table much
    // larger than its live size.
    let peak = (*objects_peak).max(objects);
    let shrunk = objects.saturating_mul(REPACK_SHRINK) <= peak
        && size <= REPACK_BACKGROUND_BYTES_PER_SHARD * SHARDS as u64;
    if db.log.defrag && (asked || shrunk) {
        let pause = if asked { repack(&db.shards, hooks.release_cache) } else { repack_by_shard(&db.shards, hooks) };
        let pause = u64::try_from(pause.as_micros()).unwrap_or(u64::MAX);
        db.log.pause_us.store(pause, Ordering::Relaxed);
        db.log.pause_max_us.fetch_max(pause, Ordering::Relaxed);
        db.log.repacks.fetch_add(1, Ordering::Relaxed);
        *objects_peak = objects;
    } else {
        *objects_peak = peak;
        for shard in &db.shards {
            let mut sh = shard.lock().unwrap();
            if sh.capacity() > 2 * sh.len() + 64 {
                sh.shrink_to_fit();
            }
        }
    }
    (hooks.after_compact)();
    db.log.snap_bytes.store(size, Ordering::Relaxed);
    db.log.compacting.store(false, Ordering::Release);
    db.log.compactions.fetch_add(1, Ordering::AcqRel);
    Ok(())
}

impl Recovered {
    pub fn seg_id(&self) -> u64 {
        self.seg_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_as_written_in_allocations_of_their_exact_size() {
        let list = Value::List(["a".as_bytes().to_vec(), Vec::new(), vec![7; 300]].into());
        let entries = [(b"key".to_vec(), Value::Str(b"value".to_vec())), (Vec::new(), Value::Str(Vec::new())), (b"list".to_vec(), list)];
        let mut bytes = Vec::new();
        for (k, v) in &entries {
            put_entry(&mut bytes, k, v);
        }
        assert_eq!(bytes.len(), entries.iter().map(|(k, v)| entry_len(k, v)).sum::<usize>());
        let mut rest = bytes.as_slice();
        for (k, v) in &entries {
            let (key, value) = read_entry(&mut rest).unwrap();
            assert_eq!((&key, key.capacity()), (k, k.len()));
            match (&value, v) {
                (Value::Str(got), Value::Str(want)) => assert_eq!((got, got.capacity()), (want, want.len())),
                (Value::List(got), Value::List(want)) => {
                    assert_eq!(got, want);
                    assert!(got.iter().all(|item| item.capacity() == item.len()));
                }
                _ => panic!("{k:?}: the value changed kind"),
            }
        }
        assert!(rest.is_empty());
        // Every cut short of a whole entry, and a bad tag, read as errors.
        for cut in 0..entry_len(b"key", &entries[0].1) {
            assert!(read_entry(&mut &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        bad[4 + 3] = 2;
        assert!(read_entry(&mut bad.as_slice()).is_err());
    }

    /// Every byte string of `shards`: its key, its place in the entry (0
    /// for the key, 1 for a string value, 2 + i for list item i), its bytes
    /// and the address of its allocation.
    fn strings(shards: &[Mutex<Shard>]) -> Vec<(Vec<u8>, usize, Vec<u8>, usize)> {
        let mut out = Vec::new();
        for shard in shards {
            for (key, value) in shard.lock().unwrap().iter() {
                out.push((key.clone(), 0, key.clone(), key.as_ptr() as usize));
                match value {
                    Value::Str(s) => out.push((key.clone(), 1, s.clone(), s.as_ptr() as usize)),
                    Value::List(list) => {
                        for (i, item) in list.iter().enumerate() {
                            out.push((key.clone(), 2 + i, item.clone(), item.as_ptr() as usize));
                        }
                    }
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_repack_moves_what_the_hint_names_keeps_the_rest_and_trims_spare_room() {
        fn never(_: *const u8) -> bool {
            false
        }
        fn always(_: *const u8) -> bool {
            true
        }
        fn nothing() {}
        let hooks = |defrag_hint| AllocatorHooks { after_compact: nothing, thread_idle: || false, release_cache: nothing, defrag_hint };
        let shards: Vec<Mutex<Shard>> = (0..4).map(|_| Mutex::new(Shard::default())).collect();
        for n in 0..200u32 {
            let key = format!("key{n}").as_bytes().to_vec();
            let value = if n % 5 == 0 {
                Value::List((0..n % 7).map(|i| vec![i as u8; 1 + n as usize]).collect())
            } else {
                Value::Str(vec![n as u8; n as usize])
            };
            shards[n as usize % 4].lock().unwrap().insert(key, value);
        }
        // A value with room to spare is trimmed, whatever the hint says.
        let mut roomy = Vec::with_capacity(100);
        roomy.extend_from_slice(b"roomy");
        shards[0].lock().unwrap().insert(b"roomy".to_vec(), Value::Str(roomy));

        let before = strings(&shards);
        repack_by_shard(&shards, hooks(never));
        let kept = strings(&shards);
        for (old, new) in before.iter().zip(&kept) {
            assert_eq!((&old.0, old.1, &old.2), (&new.0, new.1, &new.2), "the data changed");
            if (old.0.as_slice(), old.1) != (b"roomy".as_slice(), 1) {
                assert_eq!(old.3, new.3, "{:?} moved though the hint said no", old.2);
            }
        }
        assert_eq!(before.len(), kept.len());
        match &shards[0].lock().unwrap()[b"roomy".as_slice()] {
            Value::Str(s) => assert_eq!(s.capacity(), s.len()),
            Value::List(_) => panic!("roomy changed kind"),
        }

        repack_by_shard(&shards, hooks(always));
        let moved = strings(&shards);
        assert_eq!(kept.len(), moved.len());
        for (old, new) in kept.iter().zip(&moved) {
            assert_eq!((&old.0, old.1, &old.2), (&new.0, new.1, &new.2), "the data changed");
            // The copy is made while the original is live: a new address.
            if !old.2.is_empty() {
                assert_ne!(old.3, new.3, "{:?} stayed though the hint said yes", old.2);
            }
        }
    }
}
