//! Generated pods of hostile shapes inside valid reviews (Pod CREATE, in-place resizes,
//! other operations), under generated policies: no panic, a defined answer, and a patch
//! that applies and is a fixed point (see the crate documentation).
#![no_main]

use gomemlimit_injector_fuzz::check;
use gomemlimit_injector_fuzz::pod::Case;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|case: Case| {
    check(case.endpoint, &case.body, &case.policy);
});
