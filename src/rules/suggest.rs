//! "Did you mean …?" for names in rules files: the closest of the valid
//! names, when one is close enough to be a typo.

/// The candidate nearest to `word` (case-insensitive), if the distance is
/// small for its length: at most a third of its letters, and two for
/// short names.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(&word, &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ` (did you mean `x`?)`, or nothing.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, candidates)
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn typos_only() {
        let names = ["incr", "incrby", "info", "sadd"];
        assert_eq!(super::closest("insrt", names), Some("incr"));
        assert_eq!(super::closest("INFOO", names), Some("info"));
        assert_eq!(super::closest("zzzzzz", names), None);
    }
}
