//! Malformed input gets an error or a closed connection, never a crash,
//! and other connections keep being served.

mod common;
use common::*;
use std::io::Write;
use std::net::Shutdown;

#[test]
fn bad_input_is_refused() {
    let dir = temp_dir("bad-input");
    let mut server = Server::start(&dir, &[]);
    let mut keeper = server.client();
    assert_eq!(keeper.cmd(&["SET", "k", "v"]), Reply::ok());

    let cases: &[&[u8]] = &[
        b"*1\r\n$99999999999\r\n",
        b"*99999999999\r\n",
        b"*1\r\n$99999999999999999999999999\r\n",
        b"*1\r\n$536870913\r\n",
        b"*2000000\r\n",
        b"*-5\r\n$3\r\nGET\r\n",
        b"*1\r\n$-5\r\n",
        b"*1\r\n$abc\r\n",
        b"*x\r\n",
        b"*1\r\n:3\r\n",
        b"*1\r\n$3\r\nGETX\r\n",
        b"\x00\xff\x13\x37junk\r\n\r\n",
        b"GET k\r\n",
        b"*1\r\n$3\rXGET\r\n",
    ];
    for case in cases {
        let mut c = server.client();
        c.send_raw(case).unwrap();
        let got = c.read_to_close();
        assert!(got.starts_with(b"-ERR"), "{:?} -> {:?}", String::from_utf8_lossy(case), String::from_utf8_lossy(&got));
    }

    // A header line that never ends.
    let mut c = server.client();
    let mut long = b"*".to_vec();
    long.extend([b'1'; 10_000]);
    c.send_raw(&long).unwrap();
    assert!(c.read_to_close().starts_with(b"-ERR"));

    // Truncated frames, then the client goes away.
    for case in [&b"*2\r\n$3\r\nGET\r\n$5\r\nab"[..], b"*3\r\n$3\r\nSET", b"*1\r\n$4\r\nPI", b"*"] {
        let mut c = server.client();
        c.send_raw(case).unwrap();
        c.stream().shutdown(Shutdown::Write).unwrap();
        assert!(c.read_to_close().is_empty());
    }

    // A large declared bulk with only a little data: the server holds what
    // arrived, not what was declared.
    let rss_before = info_field(&mut keeper, "used_memory_rss");
    let mut hogs = Vec::new();
    for _ in 0..8 {
        let mut c = server.client();
        c.send_raw(b"*2\r\n$3\r\nGET\r\n$536870000\r\n").unwrap();
        c.send_raw(&vec![b'x'; 1 << 20]).unwrap();
        hogs.push(c);
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    // 8 MiB arrived against 4 GiB declared. The buffers grow by doubling
    // as data arrives, and how much of the outgrown ones stays resident is
    // the allocator's business (mimalloc kept about 80 MiB in one run,
    // Strata and glibc under 64 MiB): the bound is far below what was
    // declared, not a measure of any allocator.
    let rss_during = info_field(&mut keeper, "used_memory_rss");
    assert!(rss_during < rss_before + (256 << 20), "{rss_before} -> {rss_during}");
    for c in hogs {
        let _ = c.stream().shutdown(Shutdown::Both);
        let _ = c.stream().flush();
    }

    // Everyone else is still served.
    assert_eq!(keeper.cmd(&["GET", "k"]), Reply::bulk("v"));
    let mut fresh = server.client();
    assert_eq!(fresh.cmd(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(fresh.cmd(&["DBSIZE"]), Reply::Int(1));
    assert!(server.child.try_wait().unwrap().is_none(), "server still running");
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
