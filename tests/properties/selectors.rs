//! Label selectors: parsing, matching and printing.

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;
use roster::cache::{Interner, Labels, Selector};

use crate::generators::*;

proptest! {
    #![proptest_config(config(256))]

    /// Selector strings parse, match exactly as the Kubernetes semantics say, and print in a canonical form
    /// that parses back to the same selector.
    #[test]
    fn selectors_parse_match_and_round_trip(
        reqs in proptest::collection::vec(req_strategy(), 1..4),
        label_sets in proptest::collection::vec(labels_strategy(), 1..8),
    ) {
        let text = selector_text(&reqs);
        let mut interner = Interner::new();
        let selector = Selector::parse(&text, &mut interner).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for labels in &label_sets {
            let want = reqs.iter().all(|r| r.matches(labels));
            let have = selector.matches(&Labels::from_map(labels, &mut interner));
            prop_assert_eq!(have, want, "{} on {:?}", text, labels);
        }
        let reparsed = Selector::parse(&selector.to_string(), &mut interner);
        prop_assert_eq!(reparsed.as_ref(), Ok(&selector));
    }

    /// Arbitrary text from the selector alphabet never panics the parser, and an accepted selector prints
    /// to a string that parses back to it.
    #[test]
    fn selector_parser_survives_arbitrary_text(
        chars in proptest::collection::vec(select(&[
            'a', 'b', 'p', '.', '/', '-', '_', '=', '!', ',', '(', ')', ' ', '<', '>', 'i', 'n', 'o', 't', 'A', '1',
        ][..]), 0..24),
    ) {
        let text: String = chars.into_iter().collect();
        let mut interner = Interner::new();
        match Selector::parse(&text, &mut interner) {
            Ok(selector) => {
                let reparsed = Selector::parse(&selector.to_string(), &mut interner);
                prop_assert_eq!(reparsed.as_ref(), Ok(&selector), "{:?}", text);
            }
            Err(err) => prop_assert_eq!(err.selector, text),
        }
    }
}
