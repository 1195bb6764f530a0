//! "Did you mean ...?": the nearest known name by edit distance.
//!
//! Trusts: nothing about the misspelt name; names longer than `MAX_SUGGEST_LEN` get no
//! suggestion, which bounds the quadratic distance computation.

/// No known name is longer than this; a longer input is not a typo of one, and the bound
/// keeps the O(n·m) distance cheap on fuzzed input.
const MAX_SUGGEST_LEN: usize = 64;

/// The candidate nearest to `name` (case-insensitive optimal string alignment distance:
/// insertions, deletions, substitutions and swaps of neighbours), if it is near enough to
/// be a plausible typo: at most a third of the name's length, and at least 1 allowed.
/// Ties go to the alphabetically first candidate, so the answer is stable.
pub(crate) fn nearest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    if name.is_empty() || name.chars().count() > MAX_SUGGEST_LEN {
        return None;
    }
    let wanted: Vec<char> = name.to_lowercase().chars().collect();
    let allowed = (wanted.len() / 3).max(1);
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        let c: Vec<char> = candidate.to_lowercase().chars().collect();
        if c.len().abs_diff(wanted.len()) > allowed {
            continue;
        }
        let d = distance(&wanted, &c);
        if d > allowed {
            continue;
        }
        let better = match best {
            None => true,
            Some((bd, bn)) => d < bd || (d == bd && candidate < bn),
        };
        if better {
            best = Some((d, candidate));
        }
    }
    best.map(|(_, n)| n)
}

/// Optimal string alignment distance between `a` and `b`.
fn distance(a: &[char], b: &[char]) -> usize {
    let width = b.len() + 1;
    let mut rows = vec![0usize; (a.len() + 1) * width];
    let at = |i: usize, j: usize| i * width + j;
    for i in 0..=a.len() {
        rows[at(i, 0)] = i;
    }
    for j in 0..=b.len() {
        rows[at(0, j)] = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[at(i - 1, j)] + 1)
                .min(rows[at(i, j - 1)] + 1)
                .min(rows[at(i - 1, j - 1)] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[at(i - 2, j - 2)] + 1);
            }
            rows[at(i, j)] = d;
        }
    }
    rows[at(a.len(), b.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &["mynetworks", "mydestination", "myhostname", "mydomain"];

    #[test]
    fn finds_missing_letter_swap_and_case() {
        assert_eq!(
            nearest("mynetwork", NAMES.iter().copied()),
            Some("mynetworks")
        );
        assert_eq!(
            nearest("mynetwrosk", NAMES.iter().copied()),
            Some("mynetworks")
        );
        assert_eq!(
            nearest("MyHostName", NAMES.iter().copied()),
            Some("myhostname")
        );
        assert_eq!(
            nearest("my_domain", NAMES.iter().copied()),
            Some("mydomain")
        );
    }

    #[test]
    fn far_names_get_no_suggestion() {
        assert_eq!(nearest("relayhost", NAMES.iter().copied()), None);
        assert_eq!(nearest("", NAMES.iter().copied()), None);
        assert_eq!(nearest(&"m".repeat(500), NAMES.iter().copied()), None);
    }

    #[test]
    fn distance_counts_edits() {
        let d = |a: &str, b: &str| {
            distance(
                &a.chars().collect::<Vec<_>>(),
                &b.chars().collect::<Vec<_>>(),
            )
        };
        assert_eq!(d("kitten", "sitting"), 3);
        assert_eq!(d("ab", "ba"), 1);
        assert_eq!(d("", "abc"), 3);
        assert_eq!(d("same", "same"), 0);
    }
}
