//! A service-style program with Strata as its `#[global_allocator]`: a
//! pool of worker threads takes requests from a queue, builds a response
//! for each (strings, vectors, a map), and hands it back to the main thread,
//! which frees it: memory allocated on one thread and freed on another.
//!
//! ```sh
//! cargo run --release -p strata-alloc --example global_service
//! ```

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

// Every `Box`, `Vec`, `String` and `HashMap` below comes from Strata.
#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata::new();

/// A request: a key to look up and a number of items to render.
struct Request {
    id: u64,
    key: String,
    items: usize,
}

/// Renders a response: a few allocations of assorted sizes per request.
fn handle(request: &Request, catalogue: &HashMap<String, Vec<u32>>) -> String {
    let values = catalogue.get(&request.key).map(Vec::as_slice).unwrap_or(&[]);
    let rows: Vec<String> =
        values.iter().cycle().take(request.items).map(|value| format!("{{\"value\":{value}}}")).collect();
    format!("{{\"id\":{},\"key\":\"{}\",\"rows\":[{}]}}", request.id, request.key, rows.join(","))
}

fn main() {
    let catalogue: Arc<HashMap<String, Vec<u32>>> =
        Arc::new((0..100u32).map(|k| (format!("key-{k}"), (0..k % 17 + 1).map(|v| v * k).collect())).collect());
    let (request_sender, requests) = mpsc::channel::<Request>();
    let requests = Arc::new(Mutex::new(requests));
    let (response_sender, responses) = mpsc::channel::<String>();

    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (requests, responses, catalogue) =
                (Arc::clone(&requests), response_sender.clone(), Arc::clone(&catalogue));
            thread::spawn(move || loop {
                let request = requests.lock().unwrap().recv();
                let Ok(request) = request else { break };
                responses.send(handle(&request, &catalogue)).unwrap();
            })
        })
        .collect();
    drop(response_sender);

    const REQUESTS: u64 = 20_000;
    for id in 0..REQUESTS {
        let request = Request { id, key: format!("key-{}", id % 120), items: (id % 50) as usize };
        request_sender.send(request).unwrap();
    }
    drop(request_sender);

    // Responses were allocated on the workers and are freed here.
    let bytes: usize = responses.iter().map(|response| response.len()).sum();
    for worker in workers {
        worker.join().unwrap();
    }

    let stats = GLOBAL.stats();
    println!("served {REQUESTS} requests, {bytes} bytes of responses");
    println!(
        "live {} bytes, resident {} bytes, {} pages mapped; {} cache refills, {} remote frees",
        stats.bytes_live, stats.bytes_resident, stats.pages_mapped, stats.refills, stats.remote_frees
    );
}
