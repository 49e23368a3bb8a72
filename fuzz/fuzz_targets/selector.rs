//! The `roster.dev/selector` parser: any text is accepted or rejected without panicking, a rejection names
//! the text, and an accepted selector prints in a canonical form that parses back to the same selector.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roster::cache::{Interner, Labels, Operator, Selector};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut interner = Interner::new();
    let selector = match Selector::parse(text, &mut interner) {
        Ok(selector) => selector,
        Err(err) => {
            assert_eq!(err.selector, text);
            return;
        }
    };
    let printed = selector.to_string();
    let again = Selector::parse(&printed, &mut interner).expect("the canonical form parses");
    assert_eq!(again, selector, "{text:?} printed as {printed:?}");
    // Matching never panics, on labels built from the selector's own values or on none.
    let pairs = selector.requirements().iter().filter_map(|r| match &r.operator {
        Operator::Equals(v) => Some((r.key.to_string(), v.to_string())),
        Operator::Exists => Some((r.key.to_string(), String::new())),
        Operator::In(set) => set.first().map(|v| (r.key.to_string(), v.to_string())),
        _ => None,
    });
    let labels = Labels::from_pairs(pairs, &mut interner);
    let _ = selector.matches(&labels);
    let _ = selector.matches(&Labels::default());
});
