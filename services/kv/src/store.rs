//! The sharded in-memory index and the commands.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use crate::log::{encode, Log, OP_DEL, OP_FLUSH, OP_LPOP, OP_LPUSH, OP_SET};
use crate::resp::reply;

pub const SHARDS: usize = 16;

pub enum Value {
    Str(Vec<u8>),
    List(VecDeque<Vec<u8>>),
}

pub type Shard = HashMap<Vec<u8>, Value>;

pub fn shard_of(key: &[u8]) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for &b in key {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    (h ^ (h >> 16)) as usize % SHARDS
}

/// Applies a logged record during recovery; parts on shards whose snapshot
/// floor is above `seq` are already in the snapshot and are skipped.
pub fn apply_record(shards: &mut [Shard], op: u8, args: &[&[u8]], seq: u64, floor: &[u64; SHARDS]) {
    let keep = |key: &[u8]| seq >= floor[shard_of(key)];
    match op {
        OP_SET => {
            for kv in args.chunks_exact(2) {
                if keep(kv[0]) {
                    shards[shard_of(kv[0])].insert(kv[0].to_vec(), Value::Str(kv[1].to_vec()));
                }
            }
        }
        OP_DEL => {
            for k in args {
                if keep(k) {
                    shards[shard_of(k)].remove(*k);
                }
            }
        }
        OP_LPUSH if !args.is_empty() && keep(args[0]) => {
            let shard = &mut shards[shard_of(args[0])];
            let e = shard.entry(args[0].to_vec()).or_insert_with(|| Value::List(VecDeque::new()));
            if let Value::List(l) = e {
                for v in &args[1..] {
                    l.push_front(v.to_vec());
                }
            }
        }
        OP_LPOP if args.len() == 2 && keep(args[0]) => {
            let n: usize = std::str::from_utf8(args[1]).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
            let shard = &mut shards[shard_of(args[0])];
            if let Some(Value::List(l)) = shard.get_mut(args[0]) {
                for _ in 0..n {
                    l.pop_front();
                }
                if l.is_empty() {
                    shard.remove(args[0]);
                }
            }
        }
        OP_FLUSH => {
            for (i, s) in shards.iter_mut().enumerate() {
                if seq >= floor[i] {
                    *s = Shard::default();
                }
            }
        }
        _ => {}
    }
}

/// What the connection does after a command.
pub enum Next {
    /// Reply when this sequence number is durable (0: nothing to wait for).
    Wait(u64),
    Close,
    Shutdown,
}

pub struct Db {
    pub shards: Vec<Mutex<Shard>>,
    pub log: Log,
    pub allocator: &'static str,
    pub alloc_info: fn(&mut String),
}

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const NOT_INT: &str = "ERR value is not an integer or out of range";

fn wrong_args(out: &mut Vec<u8>, cmd: &[u8]) -> Next {
    let msg = format!("ERR wrong number of arguments for '{}' command", String::from_utf8_lossy(cmd).to_lowercase());
    reply::error(out, &msg);
    Next::Wait(0)
}

fn parse_i64(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Reads `/proc/self/status` field `name` (kB) in bytes.
pub fn proc_status(name: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in s.lines() {
        if let Some(rest) = line.strip_prefix(name).and_then(|r| r.strip_prefix(':')) {
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            return kb * 1024;
        }
    }
    0
}

impl Db {
    fn shard(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        self.shards[shard_of(key)].lock().unwrap()
    }

    /// Locks the shards of `keys` in ascending order.
    fn lock_many<'a>(&self, keys: impl Iterator<Item = &'a [u8]>) -> Vec<Option<MutexGuard<'_, Shard>>> {
        let mut want = [false; SHARDS];
        for k in keys {
            want[shard_of(k)] = true;
        }
        want.iter().enumerate().map(|(i, &w)| if w { Some(self.shards[i].lock().unwrap()) } else { None }).collect()
    }

    pub fn dbsize(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }

    /// Runs one request, appending its reply to `out`. Values a write
    /// replaces or deletes are freed after the shard locks are released,
    /// so that no lock is held while the allocator frees them (often a
    /// free into another thread's memory).
    pub fn execute(&self, mut args: Vec<Vec<u8>>, out: &mut Vec<u8>) -> Next {
        if args.is_empty() {
            return Next::Wait(0);
        }
        let mut name = std::mem::take(&mut args[0]);
        name.make_ascii_uppercase();
        let n = args.len();
        match name.as_slice() {
            b"PING" => match n {
                1 => reply::simple(out, "PONG"),
                2 => reply::bulk(out, &args[1]),
                _ => return wrong_args(out, &name),
            },
            b"ECHO" => {
                if n != 2 {
                    return wrong_args(out, &name);
                }
                reply::bulk(out, &args[1]);
            }
            b"SET" => {
                if n != 3 {
                    return wrong_args(out, &name);
                }
                let rec = encode(OP_SET, &[&args[1], &args[2]]);
                let val = args.pop().unwrap();
                let key = args.pop().unwrap();
                let mut sh = self.shard(&key);
                let old = sh.insert(key, Value::Str(val));
                let seq = self.log.append(rec);
                drop(sh);
                // Replaced values are freed outside the shard's lock (see
                // `execute`).
                drop(old);
                reply::ok(out);
                return Next::Wait(seq);
            }
            b"GET" => {
                if n != 2 {
                    return wrong_args(out, &name);
                }
                match self.shard(&args[1]).get(&args[1]) {
                    Some(Value::Str(v)) => reply::bulk(out, v),
                    Some(Value::List(_)) => reply::error(out, WRONGTYPE),
                    None => reply::nil(out),
                }
            }
            b"DEL" => {
                if n < 2 {
                    return wrong_args(out, &name);
                }
                let mut removed: Vec<&[u8]> = Vec::with_capacity(n - 1);
                let mut values = Vec::with_capacity(n - 1);
                let mut guards = self.lock_many(args[1..].iter().map(|k| k.as_slice()));
                for k in &args[1..] {
                    if let Some(entry) = guards[shard_of(k)].as_mut().unwrap().remove_entry(k) {
                        removed.push(k);
                        values.push(entry);
                    }
                }
                let mut seq = 0;
                if !removed.is_empty() {
                    seq = self.log.append(encode(OP_DEL, &removed));
                }
                drop(guards);
                drop(values);
                reply::int(out, removed.len() as i64);
                return Next::Wait(seq);
            }
            b"MSET" => {
                if n < 3 || n.is_multiple_of(2) {
                    return wrong_args(out, &name);
                }
                let refs: Vec<&[u8]> = args[1..].iter().map(|a| a.as_slice()).collect();
                let rec = encode(OP_SET, &refs);
                drop(refs);
                let keys: Vec<Vec<u8>> = args[1..].iter().step_by(2).cloned().collect();
                let mut old = Vec::with_capacity(keys.len());
                let mut guards = self.lock_many(keys.iter().map(|k| k.as_slice()));
                let mut it = args.drain(1..);
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    old.push(guards[shard_of(&k)].as_mut().unwrap().insert(k, Value::Str(v)));
                }
                let seq = self.log.append(rec);
                drop(guards);
                drop(old);
                reply::ok(out);
                return Next::Wait(seq);
            }
            b"MGET" => {
                if n < 2 {
                    return wrong_args(out, &name);
                }
                reply::array(out, n - 1);
                for k in &args[1..] {
                    match self.shard(k).get(k) {
                        Some(Value::Str(v)) => reply::bulk(out, v),
                        _ => reply::nil(out),
                    }
                }
            }
            b"INCR" => {
                if n != 2 {
                    return wrong_args(out, &name);
                }
                let key = args.pop().unwrap();
                let mut sh = self.shard(&key);
                let cur = match sh.get(&key) {
                    None => 0,
                    Some(Value::Str(v)) => match parse_i64(v) {
                        Some(x) => x,
                        None => {
                            reply::error(out, NOT_INT);
                            return Next::Wait(0);
                        }
                    },
                    Some(Value::List(_)) => {
                        reply::error(out, WRONGTYPE);
                        return Next::Wait(0);
                    }
                };
                let Some(new) = cur.checked_add(1) else {
                    reply::error(out, "ERR increment or decrement would overflow");
                    return Next::Wait(0);
                };
                let val = new.to_string().into_bytes();
                let rec = encode(OP_SET, &[&key, &val]);
                let old = sh.insert(key, Value::Str(val));
                let seq = self.log.append(rec);
                drop(sh);
                drop(old);
                reply::int(out, new);
                return Next::Wait(seq);
            }
            b"LPUSH" => {
                if n < 3 {
                    return wrong_args(out, &name);
                }
                let refs: Vec<&[u8]> = args[1..].iter().map(|a| a.as_slice()).collect();
                let rec = encode(OP_LPUSH, &refs);
                drop(refs);
                let mut it = args.drain(1..);
                let key = it.next().unwrap();
                let mut sh = self.shard(&key);
                let e = sh.entry(key).or_insert_with(|| Value::List(VecDeque::new()));
                let Value::List(l) = e else {
                    reply::error(out, WRONGTYPE);
                    return Next::Wait(0);
                };
                for v in it {
                    l.push_front(v);
                }
                let len = l.len();
                let seq = self.log.append(rec);
                drop(sh);
                reply::int(out, len as i64);
                return Next::Wait(seq);
            }
            b"LPOP" => {
                if n != 2 && n != 3 {
                    return wrong_args(out, &name);
                }
                let count = if n == 3 {
                    match parse_i64(&args[2]) {
                        Some(c) if c >= 0 => Some(c as usize),
                        _ => {
                            reply::error(out, "ERR value is out of range, must be positive");
                            return Next::Wait(0);
                        }
                    }
                } else {
                    None
                };
                let key = &args[1];
                let mut sh = self.shard(key);
                let popped: Vec<Vec<u8>> = match sh.get_mut(key) {
                    None => {
                        if count.is_some() {
                            out.extend_from_slice(b"*-1\r\n");
                        } else {
                            reply::nil(out);
                        }
                        return Next::Wait(0);
                    }
                    Some(Value::Str(_)) => {
                        reply::error(out, WRONGTYPE);
                        return Next::Wait(0);
                    }
                    Some(Value::List(l)) => {
                        let k = count.unwrap_or(1).min(l.len());
                        let p = l.drain(..k).collect();
                        if l.is_empty() {
                            sh.remove(key);
                        }
                        p
                    }
                };
                let mut seq = 0;
                if !popped.is_empty() {
                    seq = self.log.append(encode(OP_LPOP, &[key, popped.len().to_string().as_bytes()]));
                }
                drop(sh);
                match count {
                    None => reply::bulk(out, &popped[0]),
                    Some(_) => {
                        reply::array(out, popped.len());
                        for p in &popped {
                            reply::bulk(out, p);
                        }
                    }
                }
                return Next::Wait(seq);
            }
            b"LRANGE" => {
                if n != 4 {
                    return wrong_args(out, &name);
                }
                let (Some(start), Some(stop)) = (parse_i64(&args[2]), parse_i64(&args[3])) else {
                    reply::error(out, NOT_INT);
                    return Next::Wait(0);
                };
                match self.shard(&args[1]).get(&args[1]) {
                    None => reply::array(out, 0),
                    Some(Value::Str(_)) => reply::error(out, WRONGTYPE),
                    Some(Value::List(l)) => {
                        let len = l.len() as i64;
                        let s = if start < 0 { (len + start).max(0) } else { start };
                        let e = if stop < 0 { len + stop } else { stop.min(len - 1) };
                        if s > e || s >= len {
                            reply::array(out, 0);
                        } else {
                            reply::array(out, (e - s + 1) as usize);
                            for v in l.range(s as usize..=e as usize) {
                                reply::bulk(out, v);
                            }
                        }
                    }
                }
            }
            b"DBSIZE" => reply::int(out, self.dbsize() as i64),
            b"FLUSHALL" | b"FLUSHDB" => {
                let mut guards: Vec<_> = self.shards.iter().map(|s| s.lock().unwrap()).collect();
                for g in guards.iter_mut() {
                    **g = Shard::default();
                }
                let seq = self.log.append(encode(OP_FLUSH, &[]));
                drop(guards);
                reply::ok(out);
                return Next::Wait(seq);
            }
            b"INFO" => {
                let text = self.info();
                reply::bulk(out, text.as_bytes());
            }
            b"CONFIG" | b"COMMAND" => reply::array(out, 0),
            b"COMPACT" => {
                self.log.compact_now();
                reply::ok(out);
            }
            b"SHUTDOWN" => return Next::Shutdown,
            b"QUIT" => {
                reply::ok(out);
                return Next::Close;
            }
            _ => {
                let msg = format!("ERR unknown command '{}'", String::from_utf8_lossy(&name).chars().take(64).collect::<String>());
                reply::error(out, &msg);
            }
        }
        Next::Wait(0)
    }

    fn info(&self) -> String {
        use std::fmt::Write;
        use std::sync::atomic::Ordering::Relaxed;
        let mut s = String::from("# Memory\r\n");
        let _ = write!(s, "mem_allocator:{}\r\n", self.allocator);
        let _ = write!(s, "used_memory_rss:{}\r\n", proc_status("VmRSS"));
        let _ = write!(s, "used_memory_peak_rss:{}\r\n", proc_status("VmHWM"));
        (self.alloc_info)(&mut s);
        s.push_str("# Persistence\r\n");
        let _ = write!(s, "keys:{}\r\n", self.dbsize());
        let _ = write!(s, "log_active_bytes:{}\r\n", self.log.active_bytes.load(Relaxed));
        let _ = write!(s, "snapshot_bytes:{}\r\n", self.log.snap_bytes.load(Relaxed));
        let _ = write!(s, "compactions:{}\r\n", self.log.compactions.load(Relaxed));
        let _ = write!(s, "repacks:{}\r\n", self.log.repacks.load(Relaxed));
        let _ = write!(s, "repack_pause_us:{}\r\n", self.log.pause_us.load(Relaxed));
        let _ = write!(s, "repack_pause_max_us:{}\r\n", self.log.pause_max_us.load(Relaxed));
        let _ = write!(s, "compacting:{}\r\n", u8::from(self.log.compacting.load(Relaxed)));
        let _ = write!(s, "log_batches:{}\r\n", self.log.batches.load(Relaxed));
        s
    }
}
