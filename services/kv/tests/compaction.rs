//! Compaction keeps the data and shrinks the log, also across restarts and
//! while writes keep coming.

mod common;
use common::*;
use std::collections::{BTreeMap, VecDeque};

#[derive(Debug, Clone, PartialEq)]
enum V {
    S(String),
    L(VecDeque<String>),
}

fn check(c: &mut Client, model: &BTreeMap<String, V>) {
    assert_eq!(c.cmd(&["DBSIZE"]), Reply::Int(model.len() as i64));
    for (k, v) in model {
        match v {
            V::S(s) => assert_eq!(c.cmd(&["GET", k]), Reply::bulk(s), "{k}"),
            V::L(l) => {
                let want = Reply::Array(Some(l.iter().map(|s| Reply::bulk(s)).collect()));
                assert_eq!(c.cmd(&["LRANGE", k, "0", "-1"]), want, "{k}");
            }
        }
    }
}

#[test]
fn compaction_keeps_live_data() {
    let dir = temp_dir("compaction");
    let server = Server::start(&dir, &["--compact-bytes", "65536"]);
    let mut c = server.client();
    let mut model: BTreeMap<String, V> = BTreeMap::new();
    let mut written = 0u64;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..20_000u64 {
        let r = next();
        let key = format!("key:{}", r % 500);
        match r % 10 {
            0..=4 => {
                let val = format!("{round}-{}", "x".repeat((r >> 20) as usize % 200));
                written += (key.len() + val.len()) as u64;
                assert_eq!(c.cmd(&["SET", &key, &val]), Reply::ok());
                model.insert(key, V::S(val));
            }
            5 | 6 => {
                let want = model.remove(&key).is_some() as i64;
                assert_eq!(c.cmd(&["DEL", &key]), Reply::Int(want));
            }
            7 => {
                let lk = format!("list:{}", r % 20);
                let item = format!("item{round}");
                written += item.len() as u64;
                let V::L(l) = model.entry(lk.clone()).or_insert(V::L(VecDeque::new())) else { unreachable!() };
                l.push_front(item.clone());
                assert_eq!(c.cmd(&["LPUSH", &lk, &item]), Reply::Int(l.len() as i64));
            }
            8 => {
                let lk = format!("list:{}", r % 20);
                let want = match model.get_mut(&lk) {
                    Some(V::L(l)) => {
                        let v = l.pop_front().unwrap();
                        if l.is_empty() {
                            model.remove(&lk);
                        }
                        Reply::bulk(&v)
                    }
                    _ => Reply::Bulk(None),
                };
                assert_eq!(c.cmd(&["LPOP", &lk]), want);
            }
            _ => {
                let ck = format!("ctr:{}", r % 10);
                let n = match model.get(&ck) {
                    Some(V::S(s)) => s.parse::<i64>().unwrap() + 1,
                    _ => 1,
                };
                model.insert(ck.clone(), V::S(n.to_string()));
                assert_eq!(c.cmd(&["INCR", &ck]), Reply::Int(n));
            }
        }
    }
    let compactions = info_field(&mut c, "compactions");
    assert!(compactions >= 1, "no background compaction ran");
    check(&mut c, &model);
    assert_eq!(c.cmd(&["COMPACT"]), Reply::ok());
    check(&mut c, &model);
    let after = dir_bytes(&dir);
    let live: u64 = model
        .iter()
        .map(|(k, v)| k.len() as u64 + match v { V::S(s) => s.len() as u64, V::L(l) => l.iter().map(|s| s.len() as u64).sum() })
        .sum();
    eprintln!("written {written} bytes, live {live}, on disk after compaction {after} ({compactions} background compactions)");
    assert!(after < written / 4, "log did not shrink: {after} on disk for {written} written");
    assert!(after < live * 3 + 65536, "{after} on disk for {live} live");

    // Restart from the snapshot (plus whatever came after it).
    let mut server = server;
    server.kill();
    let server = Server::start(&dir, &["--compact-bytes", "65536"]);
    let mut c = server.client();
    check(&mut c, &model);
    // And again after more writes on top of the snapshot, then a kill.
    for i in 0..300 {
        let key = format!("key:{}", i);
        let val = format!("late{i}");
        assert_eq!(c.cmd(&["SET", &key, &val]), Reply::ok());
        model.insert(key, V::S(val));
    }
    assert_eq!(c.cmd(&["LPUSH", "list:late", "a", "b"]), Reply::Int(2));
    model.insert("list:late".into(), V::L(["b".to_string(), "a".to_string()].into()));
    let mut server = server;
    server.kill();
    let server = Server::start(&dir, &["--compact-bytes", "65536"]);
    let mut c = server.client();
    check(&mut c, &model);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compaction_under_concurrent_writes() {
    let dir = temp_dir("compaction-concurrent");
    let server = Server::start(&dir, &["--compact-bytes", "32768"]);
    let port = server.port;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(port);
                for i in 0..3000 {
                    let k = format!("t{t}:{}", i % 100);
                    assert_eq!(c.cmd(&["SET", &k, &format!("{i}")]), Reply::ok());
                    assert_eq!(c.cmd(&["LPUSH", &format!("tl{t}"), &format!("{i}")]), Reply::Int(i + 1));
                    if i % 50 == 0 {
                        assert_eq!(c.cmd(&["COMPACT"]), Reply::ok());
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut server = server;
    server.kill();
    let server = Server::start(&dir, &[]);
    let mut c = server.client();
    for t in 0..4 {
        for j in 0..100 {
            let last = 2900 + j;
            assert_eq!(c.cmd(&["GET", &format!("t{t}:{j}")]), Reply::bulk(&last.to_string()));
        }
        let Reply::Array(Some(items)) = c.cmd(&["LRANGE", &format!("tl{t}"), "0", "-1"]) else { panic!() };
        assert_eq!(items.len(), 3000);
        for (i, item) in items.iter().enumerate() {
            assert_eq!(item, &Reply::bulk(&(2999 - i).to_string()));
        }
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `slices`, `cached` and `objects_live` of Strata's line for the
/// 16-byte class in `INFO memory`.
#[cfg(feature = "alloc-strata")]
fn class_16(c: &mut Client) -> (u64, u64, u64) {
    let Reply::Bulk(Some(text)) = c.cmd(&["INFO", "memory"]) else { panic!("INFO") };
    let text = String::from_utf8(text).unwrap();
    let line = text.lines().find_map(|l| l.strip_prefix("strata_class_16:")).unwrap_or_else(|| panic!("class 16 in {text}"));
    let field = |name: &str| -> u64 {
        let pair = line.split(',').find(|p| p.starts_with(&format!("{name}="))).unwrap_or_else(|| panic!("{name} in {line}"));
        pair[name.len() + 1..].parse().unwrap()
    };
    (field("slices"), field("cached"), field("objects_live"))
}

/// Loads 20,000 keys with values of 16 bytes each (keys and values fill
/// Strata's 16-byte class) and 50 lists of 40 items, then deletes nine keys
/// in ten; returns what is left.
fn load_then_delete_nine_in_ten(c: &mut Client) -> BTreeMap<String, V> {
    let mut model: BTreeMap<String, V> = BTreeMap::new();
    for batch in 0..200 {
        let mut args = vec!["MSET".to_string()];
        for i in 0..100 {
            let n = batch * 100 + i;
            let (key, value) = (format!("key:{n:012}"), format!("val:{n:012}"));
            model.insert(key.clone(), V::S(value.clone()));
            args.extend([key, value]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(c.cmd(&args), Reply::ok());
    }
    for n in 0..50 {
        let key = format!("list:{n:07}");
        let items: Vec<String> = (0..40).map(|i| format!("item:{n:03}:{i:06}")).collect();
        let mut args = vec!["LPUSH", key.as_str()];
        args.extend(items.iter().map(String::as_str));
        assert_eq!(c.cmd(&args), Reply::Int(40));
        model.insert(key, V::L(items.into_iter().rev().collect()));
    }
    let doomed: Vec<String> = model.keys().enumerate().filter(|(i, _)| i % 10 != 0).map(|(_, k)| k.clone()).collect();
    for chunk in doomed.chunks(500) {
        let mut args = vec!["DEL"];
        args.extend(chunk.iter().map(String::as_str));
        assert_eq!(c.cmd(&args), Reply::Int(chunk.len() as i64));
    }
    for key in &doomed {
        model.remove(key);
    }
    model
}

#[test]
fn compact_repacks_the_survivors_of_a_mass_delete() {
    let dir = temp_dir("repack");
    let server = Server::start(&dir, &[]);
    let mut c = server.client();
    let model = load_then_delete_nine_in_ten(&mut c);
    #[cfg(feature = "alloc-strata")]
    let (slices_before, _, live_before) = class_16(&mut c);
    let repacks = info_field(&mut c, "repacks");
    assert_eq!(c.cmd(&["COMPACT"]), Reply::ok());
    assert_eq!(info_field(&mut c, "repacks"), repacks + 1);
    check(&mut c, &model);
    #[cfg(feature = "alloc-strata")]
    {
        // About 4,200 live 16-byte objects fill two slices of 4,096; before,
        // they were spread over the ten or more that held 40,000. The
        // compaction thread gives its cache back when it is done, so the
        // repacked objects are on slices no thread caches; the slices in
        // caches are the connection's own (it allocated the keys and values
        // it received), current and parked, emptied by the repack. One
        // more may hold the server's own small objects from its start
        // (thread names and the like), whose holes the repack fills first.
        let (slices, cached, live) = class_16(&mut c);
        eprintln!("16-byte class: {live_before} objects on {slices_before} slices before COMPACT, {live} on {slices} after ({cached} in caches)");
        assert!(slices_before >= 10, "{slices_before} slices held {live_before} objects before COMPACT");
        assert!(slices - cached <= 3, "{live} objects on {slices} slices after COMPACT, {cached} of them in caches");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_background_compaction_repacks_a_shrunken_store_shard_by_shard() {
    let dir = temp_dir("background-repack");
    // Compactions every 64 KiB of log, so that the load and the deletes
    // run several and the one after the deletes sees the store shrunk.
    let server = Server::start(&dir, &["--compact-bytes", "65536"]);
    let mut c = server.client();
    let mut model = load_then_delete_nine_in_ten(&mut c);
    // A compaction that the deletes set off may still run, and may have
    // repacked already (on a busy machine it can reach the shrunk store):
    // the figures before are read once none runs.
    while info_field(&mut c, "compacting") == 1 {
        std::thread::yield_now();
    }
    let repacked_already = info_field(&mut c, "repacks") > 0;
    #[cfg(feature = "alloc-strata")]
    let (slices_before, cached_before, live_before) = class_16(&mut c);
    // Writes to one key grow the log until a compaction repacks; the
    // count of writes is bounded, not their time.
    let mut writes = 0;
    while info_field(&mut c, "repacks") == 0 {
        assert!(writes < 100_000, "no background repack after {writes} writes");
        assert_eq!(c.cmd(&["SET", "filler", &format!("{writes:016}")]), Reply::ok());
        writes += 1;
    }
    if writes > 0 {
        model.insert("filler".into(), V::S(format!("{:016}", writes - 1)));
    }
    while info_field(&mut c, "compacting") == 1 {
        std::thread::yield_now();
    }
    check(&mut c, &model);
    #[cfg(feature = "alloc-strata")]
    {
        // The repack moved the survivors of the sparse slices into slices
        // the compaction thread filled, and the sparse slices emptied.
        // Left besides: the slices in thread caches, and slices with the
        // server's own small objects, which the store cannot move.
        let (slices, cached, live) = class_16(&mut c);
        eprintln!("16-byte class: {live_before} objects on {slices_before} slices ({cached_before} in caches) before, {live} on {slices} after the background repack ({cached} in caches, {writes} writes, repacked already: {repacked_already})");
        // Counted with the slices in caches, which threads may give back
        // meanwhile (a busy machine changes when): in every run, 12 slices
        // went to 10.
        if !repacked_already {
            assert!(slices_before >= 10, "{slices_before} slices held {live_before} objects before");
            assert!(
                slices + 2 <= slices_before,
                "{live} objects on {slices} slices after the repack ({cached} in caches), {slices_before} before"
            );
        }
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
