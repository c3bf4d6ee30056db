// SPDX-License-Identifier: MIT OR Apache-2.0

//! Strata kernel module: a minimal front that proves the core crate links.
//!
//! Placeholder: it only looks up a size class in the core (`strata`) and
//! calls the C helpers in `helpers.c`. The real module replaces this file;
//! the build rules in `Kbuild` stay.

use kernel::prelude::*;

module! {
    type: StrataModule,
    name: "strata",
    authors: ["Strata developers"],
    description: "Strata slab allocator (kernel front, minimal)",
    license: "Dual MIT/GPL",
    params: {
        size: usize {
            default: 100,
            description: "Object size to look up with strata::size_class::class_of",
        },
    },
}

// C helpers for what the 7.2 Rust API lacks; defined in `helpers.c`.
extern "C" {
    fn strata_preempt_disable();
    fn strata_preempt_enable();
}

struct StrataModule;

impl kernel::Module for StrataModule {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let size = *module_parameters::size.value();
        // SAFETY: the helpers only disable and re-enable preemption, paired.
        unsafe { strata_preempt_disable() };
        let class = strata::size_class::class_of(size, 8);
        // SAFETY: paired with the disable above.
        unsafe { strata_preempt_enable() };
        pr_info!("class_of({}, 8) = {:?}\n", size, class);
        pr_info!("loaded\n");
        Ok(StrataModule)
    }
}

impl Drop for StrataModule {
    fn drop(&mut self) {
        pr_info!("unloaded\n");
    }
}
