//! Link options for `libstrata.so`.

fn main() {
    // An allocator must never be unloaded: memory it handed out and the
    // thread-exit destructor it registered outlive any `dlclose`.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    println!("cargo:rerun-if-changed=build.rs");
}
