//! Round trips for every command, over a tiny RESP client.

mod common;
use common::*;

fn arr(items: &[&str]) -> Reply {
    Reply::Array(Some(items.iter().map(|s| Reply::bulk(s)).collect()))
}

#[test]
fn commands_round_trip() {
    let dir = temp_dir("protocol");
    let server = Server::start(&dir, &[]);
    let mut c = server.client();
    assert_eq!(c.cmd(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(c.cmd(&["ping", "hi"]), Reply::bulk("hi"));
    assert_eq!(c.cmd(&["ECHO", "hello"]), Reply::bulk("hello"));
    assert_eq!(c.cmd(&["SET", "a", "1"]), Reply::ok());
    assert_eq!(c.cmd(&["GET", "a"]), Reply::bulk("1"));
    assert_eq!(c.cmd(&["GET", "missing"]), Reply::Bulk(None));
    assert_eq!(c.cmd(&["SET", "empty", ""]), Reply::ok());
    assert_eq!(c.cmd(&["GET", "empty"]), Reply::bulk(""));
    assert_eq!(c.cmd(&["INCR", "a"]), Reply::Int(2));
    assert_eq!(c.cmd(&["INCR", "counter"]), Reply::Int(1));
    assert!(c.cmd(&["INCR", "empty"]).is_error());
    assert_eq!(c.cmd(&["SET", "big", "9223372036854775807"]), Reply::ok());
    assert!(c.cmd(&["INCR", "big"]).is_error());
    assert_eq!(c.cmd(&["MSET", "k1", "v1", "k2", "v2", "k3", "v3"]), Reply::ok());
    assert_eq!(
        c.cmd(&["MGET", "k1", "nope", "k3"]),
        Reply::Array(Some(vec![Reply::bulk("v1"), Reply::Bulk(None), Reply::bulk("v3")]))
    );
    assert!(c.cmd(&["MSET", "k1"]).is_error());
    assert!(c.cmd(&["MSET", "k1", "v", "k2"]).is_error());
    assert_eq!(c.cmd(&["DEL", "k1", "k2", "nope"]), Reply::Int(2));
    assert_eq!(c.cmd(&["GET", "k1"]), Reply::Bulk(None));
    assert_eq!(c.cmd(&["LPUSH", "l", "a", "b", "c"]), Reply::Int(3));
    assert_eq!(c.cmd(&["LPUSH", "l", "d"]), Reply::Int(4));
    assert_eq!(c.cmd(&["LRANGE", "l", "0", "-1"]), arr(&["d", "c", "b", "a"]));
    assert_eq!(c.cmd(&["LRANGE", "l", "1", "2"]), arr(&["c", "b"]));
    assert_eq!(c.cmd(&["LRANGE", "l", "-2", "100"]), arr(&["b", "a"]));
    assert_eq!(c.cmd(&["LRANGE", "l", "3", "1"]), arr(&[]));
    assert_eq!(c.cmd(&["LRANGE", "nope", "0", "-1"]), arr(&[]));
    assert_eq!(c.cmd(&["LPOP", "l"]), Reply::bulk("d"));
    assert_eq!(c.cmd(&["LPOP", "l", "2"]), arr(&["c", "b"]));
    assert_eq!(c.cmd(&["LPOP", "l"]), Reply::bulk("a"));
    assert_eq!(c.cmd(&["LPOP", "l"]), Reply::Bulk(None));
    assert_eq!(c.cmd(&["LPOP", "l", "3"]), Reply::Array(None));
    assert!(c.cmd(&["LPUSH", "a", "x"]).is_error(), "WRONGTYPE");
    assert!(c.cmd(&["LRANGE", "a", "0", "1"]).is_error());
    assert_eq!(c.cmd(&["LPUSH", "lst", "x"]), Reply::Int(1));
    assert!(c.cmd(&["GET", "lst"]).is_error());
    assert!(c.cmd(&["INCR", "lst"]).is_error());
    assert!(c.cmd(&["GET"]).is_error());
    assert!(c.cmd(&["SET", "x"]).is_error());
    assert!(c.cmd(&["NOSUCHCOMMAND"]).is_error());
    assert_eq!(c.cmd(&["DBSIZE"]), Reply::Int(6));
    assert_eq!(c.cmd(&["CONFIG", "GET", "save"]), Reply::Array(Some(vec![])));
    assert_eq!(c.cmd(&["COMMAND"]), Reply::Array(Some(vec![])));
    let Reply::Bulk(Some(info)) = c.cmd(&["INFO", "memory"]) else { panic!() };
    let info = String::from_utf8(info).unwrap();
    // The build's allocator names itself; only Strata's statistics add
    // their own fields.
    let allocator = if cfg!(feature = "alloc-strata") {
        "strata"
    } else if cfg!(feature = "alloc-mimalloc") {
        "mimalloc"
    } else {
        "system"
    };
    assert!(info.contains(&format!("mem_allocator:{allocator}\r\n")), "{info}");
    assert_eq!(info.contains("strata_bytes_live:"), allocator == "strata", "{info}");
    assert!(info_field(&mut c, "used_memory_rss") > 0);
    // Pipelined requests come back in order.
    let mut batch = Vec::new();
    for i in 0..100 {
        batch.extend(encode(&[b"SET", format!("p{i}").as_bytes(), format!("{i}").as_bytes()]));
        batch.extend(encode(&[b"GET", format!("p{i}").as_bytes()]));
    }
    c.send_raw(&batch).unwrap();
    for i in 0..100 {
        assert_eq!(c.read().unwrap(), Reply::ok());
        assert_eq!(c.read().unwrap(), Reply::bulk(&i.to_string()));
    }
    // Empty lines between requests are skipped (redis-cli --pipe sends one).
    c.send_raw(b"\r\n\r\n*1\r\n$4\r\nPING\r\n").unwrap();
    assert_eq!(c.read().unwrap(), Reply::Simple("PONG".into()));
    assert_eq!(c.cmd(&["FLUSHALL"]), Reply::ok());
    assert_eq!(c.cmd(&["DBSIZE"]), Reply::Int(0));
    assert_eq!(c.cmd(&["SET", "after", "flush"]), Reply::ok());
    assert_eq!(c.cmd(&["COMPACT"]), Reply::ok());
    assert_eq!(c.cmd(&["GET", "after"]), Reply::bulk("flush"));
    assert_eq!(c.cmd(&["QUIT"]), Reply::ok());
    // SHUTDOWN exits cleanly, and what was written is there after a restart.
    let mut server = server;
    server.shut_down();
    let server = Server::start(&dir, &[]);
    let mut c = server.client();
    assert_eq!(c.cmd(&["DBSIZE"]), Reply::Int(1));
    assert_eq!(c.cmd(&["GET", "after"]), Reply::bulk("flush"));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Requests larger than one read (64 KiB), and a pipeline whose frames
/// straddle the reads: what a read leaves of a request is kept for the
/// next, and a value comes back byte for byte.
#[test]
fn requests_across_reads() {
    let dir = temp_dir("across-reads");
    let server = Server::start(&dir, &[]);
    let mut c = server.client();
    // 3 MiB of bytes that differ from one 64 KiB read to the next.
    let big: Vec<u8> = (0..3usize << 20).map(|i| (i / 7 + i / 65_521) as u8).collect();
    c.send_raw(&encode(&[b"SET", b"big", &big])).unwrap();
    assert_eq!(c.read().unwrap(), Reply::ok());
    c.send_raw(&encode(&[b"GET", b"big"])).unwrap();
    assert_eq!(c.read().unwrap(), Reply::Bulk(Some(big.clone())));

    // 2,000 SETs of 100-byte values in one write, sent in pieces of 4,099
    // bytes, so that frames are cut at every place.
    let value = |i: usize| format!("{i:0>100}");
    let mut burst = Vec::new();
    for i in 0..2000 {
        burst.extend(encode(&[b"SET", format!("k{i}").as_bytes(), value(i).as_bytes()]));
    }
    for piece in burst.chunks(4099) {
        c.send_raw(piece).unwrap();
    }
    for _ in 0..2000 {
        assert_eq!(c.read().unwrap(), Reply::ok());
    }
    for i in (0..2000).step_by(97) {
        assert_eq!(c.cmd(&["GET", &format!("k{i}")]), Reply::bulk(&value(i)));
    }
    assert_eq!(c.cmd(&["DBSIZE"]), Reply::Int(2001));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn command_line() {
    let out = std::process::Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("--port") && text.contains("--dir") && text.contains("--compact-bytes"));

    // A directory that cannot be opened.
    let dir = temp_dir("cmdline");
    let file = dir.join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out = std::process::Command::new(BIN).args(["--port", "0", "--dir"]).arg(&file).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot"), "{out:?}");

    // A port already taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = std::process::Command::new(BIN).args(["--port", &port, "--dir"]).arg(dir.join("d")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot bind"), "{out:?}");

    let out = std::process::Command::new(BIN).arg("--bogus").output().unwrap();
    assert!(!out.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--huge-pages`: the Strata build serves with its allocator asking for
/// transparent huge pages, and `INFO` says whether it does; the other
/// builds refuse the option.
#[test]
fn huge_pages_option() {
    let dir = temp_dir("huge-pages");
    if cfg!(feature = "alloc-strata") {
        for (extra, expected) in [(&["--huge-pages"][..], 1), (&[][..], 0)] {
            let server = Server::start(&dir, extra);
            let mut c = server.client();
            assert_eq!(c.cmd(&["SET", "key", &"v".repeat(5000)]), Reply::ok());
            assert_eq!(c.cmd(&["GET", "key"]), Reply::bulk(&"v".repeat(5000)));
            assert_eq!(info_field(&mut c, "strata_huge_pages"), expected, "{extra:?}");
        }
    } else {
        let out = std::process::Command::new(BIN)
            .args(["--huge-pages", "--port", "0", "--dir"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("--huge-pages needs the Strata build"), "{out:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
