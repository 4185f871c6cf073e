//! Fuzzes config parsing and validation with arbitrary text.
//!
//! Besides "never panics" (the error message included: it points at a line and column of the
//! text), it checks that an accepted config stays accepted (`validate` again), that its hash is
//! stable across a re-parse of the same text, that a re-parse is no restart-only change, and
//! that the decoder can be built from it.

#![no_main]

use driftd::config::Config;
use driftd::event::Decoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Invalid UTF-8 cannot reach the parser (config files are read as UTF-8); keep the valid
    // prefix so mutated inputs are not wasted.
    let text = match std::str::from_utf8(data) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&data[..e.valid_up_to()]).expect("a valid prefix"),
    };
    let config = match Config::parse(text) {
        Ok(config) => config,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    config
        .validate()
        .expect("an accepted config passes validation again");
    let hash = config.hash();
    let again = Config::parse(text).expect("the same text parses again");
    assert_eq!(hash, again.hash(), "the hash of the same text changed");
    assert_eq!(
        config.restart_only_changes(&again),
        Vec::<&str>::new(),
        "a re-parse of the same text counts as a change"
    );
    let decoder = Decoder::new(&config);
    assert_eq!(decoder.max_bytes(), config.ingest.max_message_bytes);
});
