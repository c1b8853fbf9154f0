//! A rules file: YAML parsing, every protocol's spec, validation and the
//! expectations; errors must come with a position, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let label = std::path::PathBuf::from("/nonexistent/fuzz.yaml");
    let _ = meshwrap::rules::RuleSet::from_sources(&[(label, text.to_string())]);
});
