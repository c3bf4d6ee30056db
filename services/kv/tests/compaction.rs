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
