//! The API against its own description: `scripts/schemathesis.sh` fuzzes every operation of
//! `/api/openapi.json` on this build's binary (header mode with the admin token, then JWT mode)
//! and fails on a 5xx or on an answer the document does not describe (status, content type,
//! headers, body). Needs Python and schemathesis, which the script installs when missing.

use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/schemathesis.sh");

#[test]
fn every_answer_to_generated_requests_is_one_the_openapi_document_describes() {
    let output = Command::new("bash")
        .arg(SCRIPT)
        .arg(env!("CARGO_BIN_EXE_seckill"))
        // Bounded: about 30 s per mode on a debug build.
        .env("MAX_EXAMPLES", "30")
        .output()
        .unwrap_or_else(|e| panic!("run {SCRIPT}: {e}"));
    assert!(
        output.status.success(),
        "schemathesis found answers the document does not describe ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
