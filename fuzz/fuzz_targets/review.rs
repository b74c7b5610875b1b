//! Arbitrary bytes as an AdmissionReview body: see `review_target` in `src/review_target.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    harbor_iam_webhook_fuzz::review_target(data);
});
