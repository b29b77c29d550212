//! Protocol versions (Anoma style): a node speaks a contiguous range of
//! protocol versions, each with its own message set; two peers agree on the
//! highest version both speak and never fall back after that.

use std::fmt;

/// A protocol version: selects the message set (one module per version).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ProtocolVersion(pub u16);

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// A contiguous, non-empty range of protocol versions `min..=max`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RawRange", into = "RawRange")]
pub struct ProtocolRange {
    min: ProtocolVersion,
    max: ProtocolVersion,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RawRange {
    min: u16,
    max: u16,
}

impl TryFrom<RawRange> for ProtocolRange {
    type Error = EmptyRange;
    fn try_from(r: RawRange) -> Result<Self, EmptyRange> {
        ProtocolRange::new(r.min, r.max)
    }
}

impl From<ProtocolRange> for RawRange {
    fn from(r: ProtocolRange) -> Self {
        RawRange { min: r.min.0, max: r.max.0 }
    }
}

/// Error for a range whose `min` is above its `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("empty protocol range v{min}..=v{max}: min must not exceed max")]
pub struct EmptyRange {
    /// The requested lower end.
    pub min: u16,
    /// The requested upper end.
    pub max: u16,
}

impl ProtocolRange {
    /// `min..=max`; an error when `min > max`.
    pub const fn new(min: u16, max: u16) -> Result<Self, EmptyRange> {
        if min > max {
            return Err(EmptyRange { min, max });
        }
        Ok(ProtocolRange { min: ProtocolVersion(min), max: ProtocolVersion(max) })
    }

    /// The single version `v..=v`.
    pub const fn single(v: u16) -> Self {
        ProtocolRange { min: ProtocolVersion(v), max: ProtocolVersion(v) }
    }

    /// Lowest version in the range.
    pub const fn min(self) -> ProtocolVersion {
        self.min
    }

    /// Highest version in the range.
    pub const fn max(self) -> ProtocolVersion {
        self.max
    }

    /// Whether `v` is in the range.
    pub const fn contains(self, v: ProtocolVersion) -> bool {
        v.0 >= self.min.0 && v.0 <= self.max.0
    }

    /// The highest version in both ranges, or `None` when they are disjoint.
    pub fn highest_common(self, other: ProtocolRange) -> Option<ProtocolVersion> {
        let hi = self.max.min(other.max);
        let lo = self.min.max(other.min);
        (lo <= hi).then_some(hi)
    }
}

impl fmt::Display for ProtocolRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max { write!(f, "{}", self.min) } else { write!(f, "{}..={}", self.min, self.max) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: u16, b: u16) -> ProtocolRange {
        ProtocolRange::new(a, b).unwrap()
    }

    #[test]
    fn highest_common() {
        assert_eq!(r(1, 3).highest_common(r(2, 5)), Some(ProtocolVersion(3)), "overlap");
        assert_eq!(r(1, 3).highest_common(r(1, 3)), Some(ProtocolVersion(3)), "identical");
        assert_eq!(r(1, 5).highest_common(r(2, 3)), Some(ProtocolVersion(3)), "nested");
        assert_eq!(r(1, 2).highest_common(r(3, 4)), None, "disjoint");
        assert_eq!(r(3, 4).highest_common(r(1, 2)), None, "disjoint reversed");
        assert_eq!(r(1, 2).highest_common(r(2, 9)), Some(ProtocolVersion(2)), "touching");
    }

    #[test]
    fn empty_range_is_an_error() {
        assert_eq!(ProtocolRange::new(3, 2), Err(EmptyRange { min: 3, max: 2 }));
        // The path serde's `try_from` takes when deserializing.
        assert!(ProtocolRange::try_from(RawRange { min: 3, max: 2 }).is_err());
    }

    #[test]
    fn display() {
        assert_eq!(r(1, 3).to_string(), "v1..=v3");
        assert_eq!(ProtocolRange::single(2).to_string(), "v2");
    }
}
