//! Ordering releases for the release floor ([`ReleaseFloor`]): a release
//! name is dotted numbers (`1.2`, `2.0.1`), compared number by number with
//! missing numbers read as 0 (`1.2` = `1.2.0`). A name of another form
//! cannot be ordered: the floor refuses to finalize it, and a node whose
//! release cannot be ordered is refused by a cluster that has a floor.

use std::cmp::Ordering;

pub use rollgate_api::floor::ReleaseFloor;

/// Most numbers in a release name.
pub const MAX_RELEASE_PARTS: usize = 4;

/// The numbers of a release name, or `None` for a name that is not 1 to
/// [`MAX_RELEASE_PARTS`] dot-separated decimal numbers below 2^32.
pub fn release_numbers(release: &str) -> Option<Vec<u32>> {
    let parts: Vec<&str> = release.split('.').collect();
    if parts.len() > MAX_RELEASE_PARTS {
        return None;
    }
    parts
        .iter()
        .map(|p| if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) { p.parse().ok() } else { None })
        .collect()
}

/// How release `a` compares with `b`; `None` when either cannot be ordered.
pub fn compare_releases(a: &str, b: &str) -> Option<Ordering> {
    let (a, b) = (release_numbers(a)?, release_numbers(b)?);
    let len = a.len().max(b.len());
    let at = |v: &[u32], i: usize| v.get(i).copied().unwrap_or(0);
    Some((0..len).map(|i| at(&a, i).cmp(&at(&b, i))).find(|o| o.is_ne()).unwrap_or(Ordering::Equal))
}

/// Whether `release` is at or above the floor (false when it cannot be ordered).
pub fn at_or_above(release: &str, floor: &str) -> bool {
    compare_releases(release, floor).is_some_and(Ordering::is_ge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_compare_number_by_number() {
        assert_eq!(compare_releases("1.2", "1.10"), Some(Ordering::Less));
        assert_eq!(compare_releases("1.2", "1.2.0"), Some(Ordering::Equal));
        assert_eq!(compare_releases("2.0", "1.99.99"), Some(Ordering::Greater));
        assert!(at_or_above("1.2", "1.2"));
        assert!(at_or_above("1.3", "1.2"));
        assert!(!at_or_above("1.1.9", "1.2"));
    }

    #[test]
    fn garbage_release_names_cannot_be_ordered() {
        for bad in [
            "",
            ".",
            "1.",
            ".1",
            "1..2",
            "v1.2",
            "1.2-rc1",
            "1.2.3.4.5",
            "99999999999",
            "1,2",
            " 1.2",
            "1.2\n",
            "１.２",
        ] {
            assert_eq!(release_numbers(bad), None, "{bad:?}");
            assert_eq!(compare_releases(bad, "1.0"), None, "{bad:?}");
            assert!(!at_or_above(bad, "0"), "{bad:?}");
        }
    }
}
