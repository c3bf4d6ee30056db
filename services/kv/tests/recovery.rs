//! Every acknowledged write survives a SIGKILL in the middle of a load.

mod common;
use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const WRITERS: usize = 4;
const PER_WRITER: usize = 5000;

fn value(key: &str) -> String {
    format!("value-of-{key}-{}", "v".repeat(key.len() * 7 % 50))
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = temp_dir("recovery");
    let mut server = Server::start(&dir, &[]);
    let acked_total = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut threads = Vec::new();
    for w in 0..WRITERS {
        let mut c = server.client();
        let (acked_total, acked) = (acked_total.clone(), acked.clone());
        threads.push(std::thread::spawn(move || {
            let mut pushed = 0;
            for i in 0..PER_WRITER {
                let key = format!("w{w}:k{i}");
                let val = value(&key);
                // Writer 0 also exercises LPUSH and INCR.
                let (cmd, ok) = if w == 0 && i % 3 == 0 {
                    (vec!["LPUSH".to_string(), "list0".into(), key.clone()], Reply::Int(pushed + 1))
                } else if w == 1 && i % 3 == 0 {
                    (vec!["INCR".to_string(), "counter1".into()], Reply::Int(i as i64 / 3 + 1))
                } else {
                    (vec!["SET".to_string(), key.clone(), val.clone()], Reply::ok())
                };
                let args: Vec<&str> = cmd.iter().map(|s| s.as_str()).collect();
                match c.try_cmd(&args) {
                    Ok(r) => {
                        assert_eq!(r, ok, "{cmd:?}");
                        let mut a = acked.lock().unwrap();
                        match cmd[0].as_str() {
                            "LPUSH" => {
                                pushed += 1;
                                a.push(("list0".into(), key));
                            }
                            "INCR" => a.push(("counter1".into(), (i / 3 + 1).to_string())),
                            _ => a.push((key, val)),
                        }
                        acked_total.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => break,
                }
            }
        }));
    }
    // Kill mid-load: once a third of the writes are acknowledged.
    while acked_total.load(Ordering::Relaxed) < WRITERS * PER_WRITER / 3 {
        assert!(!threads.iter().all(|t| t.is_finished()), "writers finished before the kill");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    server.kill();
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap();
    let n = acked.len();
    assert!(n < WRITERS * PER_WRITER, "the kill came mid-load");

    let server = Server::start(&dir, &[]);
    let mut c = server.client();
    let mut list_items = Vec::new();
    let mut counter = 0;
    for (k, v) in acked.iter() {
        if k == "list0" {
            list_items.push(v.clone());
        } else if k == "counter1" {
            counter = v.parse().unwrap();
        } else {
            assert_eq!(c.cmd(&["GET", k]), Reply::bulk(v), "acknowledged {k} lost");
        }
    }
    let Reply::Int(got) = c.cmd(&["INCR", "counter1"]) else { panic!() };
    assert!(got > counter, "counter {got} vs acknowledged {counter}");
    let Reply::Array(Some(items)) = c.cmd(&["LRANGE", "list0", "0", "-1"]) else { panic!() };
    // The list holds every acknowledged push (and perhaps a later one), newest first.
    let items: Vec<String> = items
        .into_iter()
        .map(|r| match r {
            Reply::Bulk(Some(b)) => String::from_utf8(b).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(items.len() >= list_items.len() && items.len() <= list_items.len() + 1);
    let tail: Vec<String> = items[items.len() - list_items.len()..].iter().rev().cloned().collect();
    assert_eq!(tail, list_items);
    eprintln!("{n} acknowledged writes, all recovered");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The data directory records its log format in `FORMAT`. A log without it
/// (written before it existed, with other checksums) or with another one
/// is refused with a message and a non-zero exit, never replayed: its
/// first record would fail the checksum, read as a torn tail, and every
/// later record would be dropped.
#[test]
fn a_log_of_another_format_is_refused_not_truncated() {
    let dir = temp_dir("format");
    let mut server = Server::start(&dir, &[]);
    assert_eq!(server.client().cmd(&["SET", "key", "value"]), Reply::ok());
    server.shut_down();
    drop(server);
    let format = std::fs::read_to_string(dir.join("FORMAT")).unwrap();
    assert!(format.starts_with("strata-kv log 2"), "{format:?}");
    let log_bytes = dir_bytes(&dir);

    let refused = |expected: &str| {
        let out = std::process::Command::new(BIN).args(["--port", "0", "--dir"]).arg(&dir).output().unwrap();
        assert!(!out.status.success(), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("cannot recover") && stderr.contains(expected), "{stderr}");
    };
    std::fs::remove_file(dir.join("FORMAT")).unwrap();
    refused("no FORMAT file");
    std::fs::write(dir.join("FORMAT"), "strata-kv log 9: other\n").unwrap();
    refused("another format");
    // Nothing was truncated or removed meanwhile.
    assert_eq!(dir_bytes(&dir), log_bytes - format.len() as u64 + "strata-kv log 9: other\n".len() as u64);

    std::fs::write(dir.join("FORMAT"), &format).unwrap();
    let server = Server::start(&dir, &[]);
    assert_eq!(server.client().cmd(&["GET", "key"]), Reply::bulk("value"));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
