//! Arbitrary bytes as an AdmissionReview body, on `/mutate` and on `/audit`, with the
//! default policy and with a literal percentage: no panic, and a defined answer (see the
//! crate documentation). Seeded from `tests/data`.
#![no_main]

use gomemlimit_injector::admission::Endpoint;
use gomemlimit_injector::policy::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    // The first byte picks the endpoint and the policy, so that one input reaches both;
    // the whole input is still the body, so that the seeds stay valid reviews.
    let selector = body.first().copied().unwrap_or(0);
    let endpoint = if selector & 1 == 0 {
        Endpoint::Mutate
    } else {
        Endpoint::Audit
    };
    let policy = if selector & 2 == 0 {
        Policy::default()
    } else {
        Policy {
            percent: 90,
            ..Policy::default()
        }
    };
    gomemlimit_injector_fuzz::check(endpoint, body, &policy);
});
