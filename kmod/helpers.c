// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for the Strata module: wrappers for kernel macros and inline
 * functions that the 7.2 Rust API (rust/kernel, rust/helpers) does not
 * expose. They are linked into strata.ko next to the Rust objects; declare
 * them in Rust with `extern "C" { fn strata_...(); }`.
 */
#include <linux/mm.h>
#include <linux/preempt.h>

void strata_preempt_disable(void);
void strata_preempt_enable(void);
void *strata_page_address(const struct page *page);

void strata_preempt_disable(void)
{
	preempt_disable();
}

void strata_preempt_enable(void)
{
	preempt_enable();
}

void *strata_page_address(const struct page *page)
{
	return page_address(page);
}
