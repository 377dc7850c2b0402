//! Resource limits of one run: the language's defaults, lowered by the request, never above the
//! server's caps.
use onpyrunner_languages::Language;
use serde::{Deserialize, Serialize};

/// The limits a run gets. All are enforced by the kernel through Docker, except the wall clocks,
/// the output budgets and `stdin_bytes`, which the supervisor enforces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub wall_ms: u64,
    /// The compile stage's wall clock, apart from the run's.
    pub compile_wall_ms: u64,
    /// What the compile stage may write (diagnostics), apart from the run's output.
    pub compile_output_bytes: u64,
    pub memory_mib: u64,
    pub cpus: f64,
    pub pids: i64,
    pub output_bytes: u64,
    pub stdin_bytes: u64,
    pub file_size_mib: u64,
    pub tmpfs_mib: u64,
}

/// What a request may ask for (part of the run model); `None` keeps the language default.
pub use onpyrunner_protocol::run::LimitRequest;

/// The server's hard caps, above any language default.
#[derive(Debug, Clone, PartialEq)]
pub struct Caps {
    pub wall_ms: u64,
    pub memory_mib: u64,
    pub cpus: f64,
    pub output_bytes: u64,
    pub stdin_bytes: u64,
    /// Whether a request may raise a limit above its language's default (up to these caps).
    /// Off by default: a request may only lower its limits, so that no client takes 60 s,
    /// 2 CPUs and 2 GiB per run because it asked.
    pub raise: bool,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            wall_ms: 60_000,
            memory_mib: 2048,
            cpus: 2.0,
            output_bytes: 16 * 1024 * 1024,
            stdin_bytes: 16 * 1024 * 1024,
            raise: false,
        }
    }
}

/// A requested limit that is out of range. Names the field and the allowed range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("limits.{field} = {value} is out of range: allowed {min} to {max}")]
pub struct LimitError {
    pub field: &'static str,
    pub value: String,
    pub min: String,
    pub max: String,
}

/// Smallest values that still let an interpreter start.
const MIN_WALL_MS: u64 = 100;
const MIN_MEMORY_MIB: u64 = 32;
const MIN_CPUS: f64 = 0.1;
const MIN_OUTPUT_BYTES: u64 = 1;

/// The most a request may ask for: the default unless `raise`, never above the cap.
fn most<T: PartialOrd>(default: T, cap: T, raise: bool) -> T {
    if raise || default > cap {
        cap
    } else {
        default
    }
}

/// A requested limit within `min` and, unless `raise`, the default (never above the cap).
fn check<T: PartialOrd + ToString + Copy>(
    field: &'static str,
    requested: Option<T>,
    default: T,
    min: T,
    cap: T,
    raise: bool,
) -> Result<T, LimitError> {
    let max = most(default, cap, raise);
    match requested {
        None => Ok(if default > max { max } else { default }),
        Some(v) if v >= min && v <= max => Ok(v),
        Some(v) => Err(LimitError {
            field,
            value: v.to_string(),
            min: min.to_string(),
            max: max.to_string(),
        }),
    }
}

impl Limits {
    /// Resolve a request against a language's defaults and the caps.
    pub fn resolve(lang: &Language, req: &LimitRequest, caps: &Caps) -> Result<Self, LimitError> {
        let d = &lang.limits;
        if let Some(cpus) = req.cpus {
            if !cpus.is_finite() {
                return Err(LimitError {
                    field: "cpus",
                    value: cpus.to_string(),
                    min: MIN_CPUS.to_string(),
                    max: caps.cpus.to_string(),
                });
            }
        }
        Ok(Limits {
            wall_ms: check(
                "wall_ms",
                req.wall_ms,
                d.wall_ms,
                MIN_WALL_MS,
                caps.wall_ms,
                caps.raise,
            )?,
            memory_mib: check(
                "memory_mib",
                req.memory_mib,
                d.memory_mib,
                MIN_MEMORY_MIB,
                caps.memory_mib,
                caps.raise,
            )?,
            cpus: check("cpus", req.cpus, d.cpus, MIN_CPUS, caps.cpus, caps.raise)?,
            output_bytes: check(
                "output_bytes",
                req.output_bytes,
                d.output_bytes,
                MIN_OUTPUT_BYTES,
                caps.output_bytes,
                caps.raise,
            )?,
            compile_wall_ms: d.compile_wall_ms.min(caps.wall_ms),
            compile_output_bytes: d.compile_output_bytes.min(caps.output_bytes),
            pids: d.pids,
            stdin_bytes: caps.stdin_bytes,
            file_size_mib: d.file_size_mib,
            tmpfs_mib: d.tmpfs_mib,
        })
    }

    /// The largest request [`resolve`](Self::resolve) accepts for `lang` under `caps`, field
    /// by field (the OpenAPI document states it per language), and the smallest.
    pub fn request_range(lang: &Language, caps: &Caps) -> (LimitRequest, LimitRequest) {
        let d = &lang.limits;
        let max = LimitRequest {
            wall_ms: Some(most(d.wall_ms, caps.wall_ms, caps.raise)),
            memory_mib: Some(most(d.memory_mib, caps.memory_mib, caps.raise)),
            cpus: Some(most(d.cpus, caps.cpus, caps.raise)),
            output_bytes: Some(most(d.output_bytes, caps.output_bytes, caps.raise)),
        };
        let min = LimitRequest {
            wall_ms: Some(MIN_WALL_MS),
            memory_mib: Some(MIN_MEMORY_MIB),
            cpus: Some(MIN_CPUS),
            output_bytes: Some(MIN_OUTPUT_BYTES),
        };
        (min, max)
    }

    /// The language's defaults, within the caps.
    pub fn defaults(lang: &Language, caps: &Caps) -> Self {
        Self::resolve(lang, &LimitRequest::default(), caps).expect("defaults never fail")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn python() -> &'static Language {
        onpyrunner_languages::find("python").unwrap()
    }

    #[test]
    fn defaults_come_from_the_language_table() {
        let l = Limits::defaults(python(), &Caps::default());
        assert_eq!(l.wall_ms, python().limits.wall_ms);
        assert_eq!(l.memory_mib, python().limits.memory_mib);
    }

    #[test]
    fn a_request_may_lower_a_limit() {
        let req = LimitRequest {
            wall_ms: Some(500),
            ..Default::default()
        };
        assert_eq!(
            Limits::resolve(python(), &req, &Caps::default())
                .unwrap()
                .wall_ms,
            500
        );
    }

    #[test]
    fn a_request_may_not_raise_a_limit_unless_the_server_allows_it() {
        let req = LimitRequest {
            wall_ms: Some(python().limits.wall_ms + 1),
            ..Default::default()
        };
        let err = Limits::resolve(python(), &req, &Caps::default()).unwrap_err();
        assert_eq!(err.field, "wall_ms");
        assert_eq!(
            err.max,
            python().limits.wall_ms.to_string(),
            "the default is the most"
        );
        let allowed = Caps {
            raise: true,
            ..Caps::default()
        };
        let raised = Limits::resolve(python(), &req, &allowed).unwrap();
        assert_eq!(raised.wall_ms, python().limits.wall_ms + 1);
    }

    #[test]
    fn a_limit_above_the_cap_names_the_field_and_the_cap() {
        let req = LimitRequest {
            memory_mib: Some(1 << 20),
            ..Default::default()
        };
        let caps = Caps {
            raise: true,
            ..Caps::default()
        };
        let err = Limits::resolve(python(), &req, &caps).unwrap_err();
        assert_eq!(err.field, "memory_mib");
        assert_eq!(err.max, "2048");
        assert!(err.to_string().contains("limits.memory_mib"), "{err}");
    }

    #[test]
    fn nan_cpus_is_rejected() {
        let req = LimitRequest {
            cpus: Some(f64::NAN),
            ..Default::default()
        };
        assert_eq!(
            Limits::resolve(python(), &req, &Caps::default())
                .unwrap_err()
                .field,
            "cpus"
        );
    }

    #[test]
    fn a_default_above_a_lowered_cap_is_clamped() {
        let caps = Caps {
            wall_ms: 1000,
            ..Default::default()
        };
        assert_eq!(Limits::defaults(python(), &caps).wall_ms, 1000);
    }
}
