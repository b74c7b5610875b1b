//! A generated Harbor-ish pod through the engine: see `mutate_target` in `src/lib.rs`.
#![no_main]

use harbor_iam_webhook_fuzz::PodInput;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: PodInput| {
    harbor_iam_webhook_fuzz::mutate_target(&input);
});
