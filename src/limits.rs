//! Resource limits of a server container and of each compile request it serves: the values
//! the configuration may set and the safe defaults every server gets.

/// Limits as configured; `None` means "the default" (or the global setting).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Memory in bytes (`MEMORY`, `--memory`).
    pub memory: Option<i64>,
    /// CPUs in billionths (`CPUS`, `--cpus`).
    pub nano_cpus: Option<i64>,
    /// Processes and threads (`PIDS`, `--pids`).
    pub pids: Option<i64>,
    /// Size of the temporary directory's tmpfs, in bytes (`TMPSIZE`, `--tmpsize`).
    pub tmp_size: Option<u64>,
    /// Limits of each compile request (`RLIMIT_*`).
    pub request: Request,
}

/// Limits of each compile request, as the classic service set them for its user in
/// `~stap-server/.systemtap/rc`: CPU seconds (`RLIMIT_CPU`), address space (`RLIMIT_AS`),
/// largest file (`RLIMIT_FSIZE`), stack (`RLIMIT_STACK`) and processes of the server's user
/// (`RLIMIT_NPROC`). `None` means "the default"; a resolved 0 means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Request {
    pub cpu: Option<u64>,
    pub address_space: Option<u64>,
    pub file_size: Option<u64>,
    pub stack: Option<u64>,
    pub processes: Option<u64>,
}

/// Request limits with every value decided; 0 is "unlimited".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedRequest {
    pub cpu: u64,
    pub address_space: u64,
    pub file_size: u64,
    pub stack: u64,
    pub processes: u64,
}

/// The classic service's request limits (systemtap's own packaging writes them to the
/// server user's rc file), but for processes: the container's pids limit already bounds
/// them, and RLIMIT_NPROC would count the server's own threads too.
pub const REQUEST_DEFAULT: ResolvedRequest = ResolvedRequest {
    cpu: 60,
    address_space: 4 << 30,
    file_size: 51_200_000,
    stack: 1_024_000,
    processes: 0,
};

impl ResolvedRequest {
    const KEYS: [&str; 5] = ["cpu", "as", "fsize", "stack", "nproc"];

    fn values(self) -> [u64; 5] {
        [
            self.cpu,
            self.address_space,
            self.file_size,
            self.stack,
            self.processes,
        ]
    }

    /// `cpu=60 as=4294967296 ...`: the form of the server's environment and label.
    pub fn encode(self) -> String {
        Self::KEYS
            .iter()
            .zip(self.values())
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Reads back what `encode` wrote; `None` for anything else.
    pub fn decode(text: &str) -> Option<ResolvedRequest> {
        let mut values = [None; 5];
        for word in text.split_whitespace() {
            let (k, v) = word.split_once('=')?;
            let i = Self::KEYS.iter().position(|key| *key == k)?;
            values[i] = Some(v.parse().ok()?);
        }
        Some(ResolvedRequest {
            cpu: values[0]?,
            address_space: values[1]?,
            file_size: values[2]?,
            stack: values[3]?,
            processes: values[4]?,
        })
    }
}

impl Request {
    fn over(self, under: Request) -> Request {
        Request {
            cpu: self.cpu.or(under.cpu),
            address_space: self.address_space.or(under.address_space),
            file_size: self.file_size.or(under.file_size),
            stack: self.stack.or(under.stack),
            processes: self.processes.or(under.processes),
        }
    }

    fn resolve(self) -> ResolvedRequest {
        let d = REQUEST_DEFAULT;
        ResolvedRequest {
            cpu: self.cpu.unwrap_or(d.cpu),
            address_space: self.address_space.unwrap_or(d.address_space),
            file_size: self.file_size.unwrap_or(d.file_size),
            stack: self.stack.unwrap_or(d.stack),
            processes: self.processes.unwrap_or(d.processes),
        }
    }

    /// Every value set, from resolved limits.
    pub fn all(r: ResolvedRequest) -> Request {
        Request {
            cpu: Some(r.cpu),
            address_space: Some(r.address_space),
            file_size: Some(r.file_size),
            stack: Some(r.stack),
            processes: Some(r.processes),
        }
    }

    /// Sets the limit a `RLIMIT_*` variable names; `Ok(false)` for any other variable.
    fn set(&mut self, var: &str, value: &str) -> Result<bool, String> {
        let slot = match var {
            "RLIMIT_CPU" => &mut self.cpu,
            "RLIMIT_AS" => &mut self.address_space,
            "RLIMIT_FSIZE" => &mut self.file_size,
            "RLIMIT_STACK" => &mut self.stack,
            "RLIMIT_NPROC" => &mut self.processes,
            _ => return Ok(false),
        };
        *slot = match (var, value) {
            (_, "") => None,
            (_, "0" | "unlimited") => Some(0),
            ("RLIMIT_CPU", v) => Some(seconds(v)?),
            ("RLIMIT_NPROC", v) => {
                Some(v.parse::<u64>().ok().filter(|n| *n >= 16).ok_or_else(|| {
                    format!("\"{v}\" is not a number of processes of 16 or more, or 0 (no limit)")
                })?)
            }
            (_, v) => Some(size(v)? as u64),
        };
        Ok(true)
    }
}

/// Seconds of CPU time: a whole number, 1 or more.
pub fn seconds(v: &str) -> Result<u64, String> {
    v.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("\"{v}\" is not a whole number of seconds, or 0 (no limit)"))
}

/// The limits a server gets when nothing else is configured: enough for a kernel module build,
/// small enough that one tenant's request cannot starve the host. The CPU is not capped (0):
/// kbuild and stap's tracepoint queries run in parallel, and a cap of one CPU made a first
/// tracepoint compile take 1.8 times as long on two cores; under contention the kernel shares
/// the CPUs between containers by their equal weights.
pub const DEFAULT: Resolved = Resolved {
    memory: 4 << 30,
    nano_cpus: 0,
    pids: 256,
    tmp_size: 256 << 20,
    request: REQUEST_DEFAULT,
};

/// The largest file a server may write, in bytes (the `fsize` ulimit).
pub const FILE_SIZE: i64 = 256 << 20;

/// Limits with every value decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resolved {
    pub memory: i64,
    /// Billionths of a CPU; 0 for no cap.
    pub nano_cpus: i64,
    pub pids: i64,
    pub tmp_size: u64,
    pub request: ResolvedRequest,
}

const VARIABLES: [&str; 9] = [
    "MEMORY",
    "CPUS",
    "PIDS",
    "TMPSIZE",
    "RLIMIT_CPU",
    "RLIMIT_AS",
    "RLIMIT_FSIZE",
    "RLIMIT_STACK",
    "RLIMIT_NPROC",
];

/// Whether `var` is one of the limit variables.
pub fn is_limit(var: &str) -> bool {
    VARIABLES.contains(&var)
}

impl Limits {
    /// Sets the limit named by a configuration variable. Returns `Ok(false)` when `var` is not a
    /// limit variable; an empty value resets to the default.
    pub fn set(&mut self, var: &str, value: &str) -> Result<bool, String> {
        if self.request.set(var, value)? {
            return Ok(true);
        }
        let slot = match var {
            "MEMORY" => &mut self.memory,
            "CPUS" => &mut self.nano_cpus,
            "PIDS" => &mut self.pids,
            "TMPSIZE" => {
                self.tmp_size = if value.is_empty() {
                    None
                } else {
                    Some(size(value)? as u64)
                };
                return Ok(true);
            }
            _ => return Ok(false),
        };
        *slot = if value.is_empty() {
            None
        } else {
            Some(match var {
                "MEMORY" => memory(value)?,
                "CPUS" => cpus(value)?,
                _ => pids(value)?,
            })
        };
        Ok(true)
    }

    /// `self` where set, otherwise `under`.
    pub fn over(self, under: Limits) -> Limits {
        Limits {
            memory: self.memory.or(under.memory),
            nano_cpus: self.nano_cpus.or(under.nano_cpus),
            pids: self.pids.or(under.pids),
            tmp_size: self.tmp_size.or(under.tmp_size),
            request: self.request.over(under.request),
        }
    }

    pub fn resolve(self) -> Resolved {
        Resolved {
            memory: self.memory.unwrap_or(DEFAULT.memory),
            nano_cpus: self.nano_cpus.unwrap_or(DEFAULT.nano_cpus),
            pids: self.pids.unwrap_or(DEFAULT.pids),
            tmp_size: self.tmp_size.unwrap_or(DEFAULT.tmp_size),
            request: self.request.resolve(),
        }
    }
}

/// A size such as `1073741824`, `512m`, `1g` or `64k` (powers of 1024).
pub fn size(v: &str) -> Result<i64, String> {
    let bad = || format!("\"{v}\" is not a size such as 512m or 1g");
    let lower = v.to_ascii_lowercase();
    let (digits, shift) = match lower.strip_suffix('b').unwrap_or(&lower) {
        s if s.ends_with('k') => (&s[..s.len() - 1], 10),
        s if s.ends_with('m') => (&s[..s.len() - 1], 20),
        s if s.ends_with('g') => (&s[..s.len() - 1], 30),
        s => (s, 0),
    };
    let n: i64 = digits.parse().map_err(|_| bad())?;
    if n <= 0 {
        return Err(bad());
    }
    n.checked_mul(1 << shift).ok_or_else(bad)
}

/// Memory: a size of at least 64m (less cannot build a module).
pub fn memory(v: &str) -> Result<i64, String> {
    let n = size(v)?;
    if n < 64 << 20 {
        return Err(format!(
            "memory \"{v}\" is below the 64m a module build needs"
        ));
    }
    Ok(n)
}

/// CPUs: a decimal such as `1` or `0.5`, from 0.01 (the least the engine enforces; a smaller
/// value would round to 0, which the engine reads as "no limit").
pub fn cpus(v: &str) -> Result<i64, String> {
    match v.parse::<f64>() {
        Ok(c) if (0.01..=1024.0).contains(&c) => Ok((c * 1e9).round() as i64),
        _ => Err(format!(
            "cpus \"{v}\" is not a number of CPUs from 0.01 to 1024, such as 1 or 0.5"
        )),
    }
}

/// Pids: at least 16 (a build runs make, gcc and their children).
pub fn pids(v: &str) -> Result<i64, String> {
    match v.parse::<i64>() {
        Ok(n) if n >= 16 => Ok(n),
        _ => Err(format!("pids \"{v}\" is not a whole number of 16 or more")),
    }
}

/// Tmpfs size for the command line (same form as `size`).
pub fn tmp_size(v: &str) -> Result<u64, String> {
    size(v).map(|n| n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("1024"), Ok(1024));
        assert_eq!(size("64k"), Ok(64 << 10));
        assert_eq!(size("512M"), Ok(512 << 20));
        assert_eq!(size("2g"), Ok(2 << 30));
        assert_eq!(size("2gb"), Ok(2 << 30));
        assert!(size("0").is_err());
        assert!(size("-1m").is_err());
        assert!(size("lots").is_err());
        assert!(size("99999999999g").is_err());
    }

    #[test]
    fn bounds() {
        assert!(memory("32m").is_err());
        assert_eq!(cpus("0.5"), Ok(500_000_000));
        assert!(cpus("0").is_err());
        assert!(cpus("nan").is_err());
        assert!(cpus("0.000000001").is_err(), "would round to 0: no limit");
        assert_eq!(cpus("0.01"), Ok(10_000_000));
        assert!(pids("8").is_err());
        assert_eq!(pids("100"), Ok(100));
    }

    #[test]
    fn layering() {
        let mut server = Limits::default();
        assert_eq!(server.set("PIDS", "64"), Ok(true));
        assert_eq!(server.set("PORT", "1"), Ok(false));
        let global = Limits {
            memory: Some(2 << 30),
            pids: Some(512),
            ..Limits::default()
        };
        let resolved = server.over(global).resolve();
        assert_eq!(resolved.pids, 64);
        assert_eq!(resolved.memory, 2 << 30);
        assert_eq!(resolved.nano_cpus, DEFAULT.nano_cpus);
        assert_eq!(resolved.tmp_size, DEFAULT.tmp_size);
        assert_eq!(resolved.request, REQUEST_DEFAULT);
    }

    #[test]
    fn request_limits() {
        let mut server = Limits::default();
        assert_eq!(server.set("RLIMIT_CPU", "20"), Ok(true));
        assert_eq!(server.set("RLIMIT_AS", "2g"), Ok(true));
        assert_eq!(server.set("RLIMIT_NPROC", "0"), Ok(true));
        assert!(server.set("RLIMIT_CPU", "1.5").is_err());
        assert!(server.set("RLIMIT_NPROC", "3").is_err());
        assert!(server.set("RLIMIT_FSIZE", "big").is_err());
        let global = Limits {
            request: Request {
                cpu: Some(90),
                stack: Some(0),
                ..Request::default()
            },
            ..Limits::default()
        };
        let r = server.over(global).resolve().request;
        assert_eq!(r.cpu, 20);
        assert_eq!(r.address_space, 2 << 30);
        assert_eq!(r.stack, 0);
        assert_eq!(r.file_size, REQUEST_DEFAULT.file_size);
        assert_eq!(ResolvedRequest::decode(&r.encode()), Some(r));
        assert_eq!(
            REQUEST_DEFAULT.encode(),
            "cpu=60 as=4294967296 fsize=51200000 stack=1024000 nproc=0"
        );
        assert_eq!(ResolvedRequest::decode("cpu=60"), None);
        assert_eq!(
            ResolvedRequest::decode("cpu=x as=1 fsize=1 stack=1 nproc=1"),
            None
        );
    }
}
