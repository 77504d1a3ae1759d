//! Which map implementation a binary uses. Decided from build info and confirmed by symbols that
//! exist in only one implementation — never from `runtime.mapiterinit`, which Swiss binaries also
//! carry as a linkname shim.

use serde::Serialize;

use crate::buildinfo::{BuildInfo, GoVersion};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MapImpl {
    /// `runtime.hmap` buckets with incremental evacuation (Go ≤ 1.23, and 1.24/1.25 noswissmap).
    Classic,
    /// `internal/runtime/maps` Swiss tables (Go 1.24+ by default, only choice from 1.26).
    Swiss,
}

impl MapImpl {
    pub fn name(self) -> &'static str {
        match self {
            MapImpl::Classic => "classic",
            MapImpl::Swiss => "swiss",
        }
    }
}

/// Symbols that exist only in one implementation.
pub const SWISS_ONLY: &str = "internal/runtime/maps.(*Iter).Next";
pub const CLASSIC_ONLY: &str = "runtime.hashGrow";

/// The decision and, when symbols contradicted build info, why symbols won.
pub fn decide(
    info: &BuildInfo,
    version: GoVersion,
    has_symbol: impl Fn(&str) -> bool,
) -> (MapImpl, Option<String>) {
    let by_build = if version.minor >= 26 || version.major > 1 {
        MapImpl::Swiss
    } else if version.minor >= 24 {
        if info.has_experiment("noswissmap") {
            MapImpl::Classic
        } else {
            MapImpl::Swiss
        }
    } else {
        MapImpl::Classic
    };
    let by_symbols = match (has_symbol(SWISS_ONLY), has_symbol(CLASSIC_ONLY)) {
        (true, false) => Some(MapImpl::Swiss),
        (false, true) => Some(MapImpl::Classic),
        _ => None,
    };
    match by_symbols {
        Some(s) if s != by_build => (
            s,
            Some(format!(
                "build info ({}) suggests {} maps but the binary has {}; using {}",
                info.raw_version,
                by_build.name(),
                if s == MapImpl::Swiss {
                    SWISS_ONLY
                } else {
                    CLASSIC_ONLY
                },
                s.name()
            )),
        ),
        _ => (by_build, None),
    }
}
