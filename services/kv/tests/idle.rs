//! An idle server holds no buffer sized for its largest request: once the
//! log writer and a connection have carried a large write and gone idle,
//! the heap is back where it started.
//!
//! The figure read is Strata's count of live heap bytes (`strata_bytes_live`
//! in `INFO memory`), which the other builds do not have, so this test is
//! part of the Strata build only.
#![cfg(feature = "alloc-strata")]

mod common;
use common::*;

/// Values per `MSET`, and the size of each: the request, the log record
/// and so the buffers that carry them are over 512 KiB.
const VALUES: usize = 8;
const VALUE_BYTES: usize = 64 << 10;

#[test]
fn idle_log_and_connections_give_their_buffers_back() {
    let dir = temp_dir("idle");
    let server = Server::start(&dir, &[]);
    let mut probe = server.client();
    let before = info_field(&mut probe, "strata_bytes_live");

    let mut writer = server.client();
    let keys: Vec<String> = (0..VALUES).map(|i| format!("big{i}")).collect();
    let values: Vec<String> = (0..VALUES).map(|i| char::from(b'a' + i as u8).to_string().repeat(VALUE_BYTES)).collect();
    let mut mset = vec!["MSET"];
    for (k, v) in keys.iter().zip(&values) {
        mset.push(k);
        mset.push(v);
    }
    assert_eq!(writer.cmd(&mset), Reply::ok());
    for (k, v) in keys.iter().zip(&values) {
        assert_eq!(writer.cmd(&["GET", k]), Reply::bulk(v), "{k}");
    }
    let holding = info_field(&mut probe, "strata_bytes_live");
    assert!(holding >= before + (VALUES * VALUE_BYTES) as u64, "live {before} -> {holding} with the values stored");
    assert_eq!(writer.cmd(&["FLUSHALL"]), Reply::ok());
    assert_eq!(writer.cmd(&["DBSIZE"]), Reply::Int(0));

    // `writer` stays open and idle. Its connection may keep what it started
    // with (a read buffer of 64 KiB and a reply buffer of 16 KiB); anything
    // near the size of the write is a buffer kept after its use.
    let allowance = (64 + 16 + 16) << 10;
    let mut after = 0;
    for _ in 0..200 {
        // Longer than the idle period (200 ms), so that `probe` itself
        // lets its connection go idle between looks.
        std::thread::sleep(std::time::Duration::from_millis(300));
        after = info_field(&mut probe, "strata_bytes_live");
        if after <= before + allowance {
            break;
        }
    }
    assert!(
        after <= before + allowance,
        "live heap bytes: {before} at start, {holding} holding the values, still {after} idle after FLUSHALL"
    );
    assert_eq!(writer.cmd(&["PING"]), Reply::Simple("PONG".into()));
}
