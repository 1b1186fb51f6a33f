//! mDNS advertisement of the compile servers through avahi-daemon's static service files.
//!
//! The servers run in containers that cannot reach the host's avahi-daemon, so the host
//! advertises them instead: one `*.service` file per server in avahi's services directory
//! (normally `/etc/avahi/services`), which avahi-daemon reloads when the directory changes.
//! The TXT records are the ones stap-serverd itself would publish, so a stock `stap`
//! client finds and trusts the servers as usual.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What one server advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// Service instance name, e.g. `Systemtap Compile Server on %h native`; avahi replaces
    /// `%h` with the host name.
    pub name: String,
    /// Host port the server listens on.
    pub port: u16,
    /// Kernel release the server builds for (first half of `sysinfo`).
    pub release: String,
    /// Architecture the server builds for (second half of `sysinfo`).
    pub arch: String,
    /// Compile server protocol version, e.g. `5.1`.
    pub version: String,
    /// The server's `-R/-B/-D/-I` options, see [`optinfo`].
    pub optinfo: String,
    /// Serial number of the server's certificate, see [`crate::certinfo`].
    pub certinfo: String,
}

/// The avahi service-group document advertising `a` as a `_stap._tcp` service.
///
/// The TXT records come in stap-serverd's order: `sysinfo`, `optinfo`, `version`, `certinfo`.
pub fn service_xml(a: &Advert) -> String {
    let txt = [
        format!("sysinfo={} {}", a.release, a.arch),
        format!("optinfo={}", a.optinfo),
        format!("version={}", a.version),
        format!("certinfo={}", a.certinfo),
    ];
    let mut xml = String::from(concat!(
        "<?xml version=\"1.0\" standalone='no'?>\n",
        "<!DOCTYPE service-group SYSTEM \"avahi-service.dtd\">\n",
        "<service-group>\n",
    ));
    xml += &format!(
        "  <name replace-wildcards=\"yes\">{}</name>\n",
        escape(&a.name)
    );
    xml += "  <service>\n    <type>_stap._tcp</type>\n";
    xml += &format!("    <port>{}</port>\n", a.port);
    for record in &txt {
        xml += &format!("    <txt-record>{}</txt-record>\n", escape(record));
    }
    xml += "  </service>\n</service-group>\n";
    xml
}

/// `text` as XML character data.
///
/// Control characters become spaces: most are not allowed in XML at all (avahi would reject
/// the whole file), and the rest (tab, newline) have no business in a service name or TXT
/// record.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The `optinfo` TXT value for a server started with these stap-serverd options.
///
/// Follows stap-serverd's `create_services` (stap-serverd.cxx): each option is kept as the
/// option letter glued to its argument (`-R/path`, `-B<opt>`, `-D<def>`, `-I<path>`), grouped
/// in the order -R, -B, -D, -I, each group in command-line order, joined by single spaces;
/// empty when there are none. stap-serverd keeps only the last -R, hence a single `runtime`.
pub fn optinfo(
    includes: &[String],
    defines: &[String],
    builds: &[String],
    runtime: Option<&str>,
) -> String {
    let runtime = runtime.map(|r| format!("-R{r}"));
    let builds = builds.iter().map(|b| format!("-B{b}"));
    let defines = defines.iter().map(|d| format!("-D{d}"));
    let includes = includes.iter().map(|i| format!("-I{i}"));
    let tokens: Vec<String> = runtime
        .into_iter()
        .chain(builds)
        .chain(defines)
        .chain(includes)
        .collect();
    tokens.join(" ")
}

const FILE_PREFIX: &str = "stap-server-";
const FILE_SUFFIX: &str = ".service";

/// Publishes and withdraws service files in one directory (avahi's services directory).
#[derive(Debug, Clone)]
pub struct Publisher {
    dir: PathBuf,
}

impl Publisher {
    /// A publisher for the service files in `dir`, which is not created here: whether a
    /// missing directory should be created is the caller's decision.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Publisher { dir: dir.into() }
    }

    /// The directory the files go to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The service file name for a server key: `stap-server-<key>.service`.
    ///
    /// Keys are meant to be container names (`[A-Za-z0-9_.-]`), which are used as they are.
    /// Any other byte is written as `%XX`, so every key gets a distinct, single-component
    /// file name and [`Publisher::published`] can recover it.
    pub fn file_name(key: &str) -> String {
        let mut name = String::from(FILE_PREFIX);
        for &b in key.as_bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
                name.push(char::from(b));
            } else {
                name += &format!("%{b:02X}");
            }
        }
        name + FILE_SUFFIX
    }

    /// Writes the service file for `key`; returns whether it changed.
    ///
    /// The file is replaced atomically so that avahi-daemon, which reloads on every change
    /// in the directory, never sees a partial file. Nothing is written when the file already
    /// has this content, so an unchanged server does not make avahi re-announce everything.
    pub fn publish(&self, key: &str, a: &Advert) -> io::Result<bool> {
        if self.is_published(key, a) {
            return Ok(false);
        }
        let name = Self::file_name(key);
        let path = self.dir.join(&name);
        let xml = service_xml(a);
        // avahi only reads `*.service`, and the leading dot keeps the file out of listings.
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let result = write_synced(&tmp, xml.as_bytes()).and_then(|()| fs::rename(&tmp, &path));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| true)
    }

    /// Whether the service file for `key` says exactly `a`. An unreadable file does not (it
    /// is simply replaced; if that fails too, the write reports why).
    pub fn is_published(&self, key: &str, a: &Advert) -> bool {
        let path = self.dir.join(Self::file_name(key));
        fs::read(&path).is_ok_and(|old| old == service_xml(a).as_bytes())
    }

    /// Removes the service file for `key`; returns whether there was one.
    pub fn withdraw(&self, key: &str) -> io::Result<bool> {
        match fs::remove_file(self.dir.join(Self::file_name(key))) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The keys, sorted, of the service files of ours in the directory whose key starts
    /// with `prefix`, so that the caller can withdraw those of servers that are gone.
    ///
    /// A missing directory holds no files, so it gives an empty list.
    pub fn published(&self, prefix: &str) -> io::Result<Vec<String>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut keys = Vec::new();
        for entry in entries {
            let file_name = entry?.file_name();
            let Some(key) = file_name.to_str().and_then(key_of) else {
                continue;
            };
            if key.starts_with(prefix) {
                keys.push(key);
            }
        }
        keys.sort();
        Ok(keys)
    }
}

/// The key whose [`Publisher::file_name`] is `name`, if it is one.
fn key_of(name: &str) -> Option<String> {
    let encoded = name.strip_prefix(FILE_PREFIX)?.strip_suffix(FILE_SUFFIX)?;
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    let key = String::from_utf8(bytes).ok()?;
    // Only names we would have written count, so a stray file is never taken for a server.
    (Publisher::file_name(&key) == name).then_some(key)
}

/// Creates or truncates `path` with mode 0644, writes `data` and flushes it to disk, so that
/// a crash after the rename cannot leave an empty file behind.
fn write_synced(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)?;
    // The mode given to open is filtered by the umask; avahi-daemon needs to read the file.
    file.set_permissions(fs::Permissions::from_mode(0o644))?;
    file.write_all(data)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn example() -> Advert {
        Advert {
            name: "Systemtap Compile Server on %h native".to_string(),
            port: 5600,
            release: "6.1.0-56-amd64".to_string(),
            arch: "x86_64".to_string(),
            version: "5.1".to_string(),
            optinfo: String::new(),
            certinfo: "00:cc:1a:9b:4b".to_string(),
        }
    }

    #[test]
    fn xml_of_the_example() {
        let want = r#"<?xml version="1.0" standalone='no'?>
<!DOCTYPE service-group SYSTEM "avahi-service.dtd">
<service-group>
  <name replace-wildcards="yes">Systemtap Compile Server on %h native</name>
  <service>
    <type>_stap._tcp</type>
    <port>5600</port>
    <txt-record>sysinfo=6.1.0-56-amd64 x86_64</txt-record>
    <txt-record>optinfo=</txt-record>
    <txt-record>version=5.1</txt-record>
    <txt-record>certinfo=00:cc:1a:9b:4b</txt-record>
  </service>
</service-group>
"#;
        assert_eq!(service_xml(&example()), want);
    }

    #[test]
    fn xml_escapes_all_text() {
        let a = Advert {
            name: "a&b <c> \"d\" 'e'\nf".to_string(),
            release: "r<1>".to_string(),
            arch: "x&y".to_string(),
            version: "'v'".to_string(),
            optinfo: "-DX=\"<&>\"".to_string(),
            certinfo: "c\u{1}".to_string(),
            ..example()
        };
        let xml = service_xml(&a);
        assert!(xml.contains(
            "<name replace-wildcards=\"yes\">a&amp;b &lt;c&gt; &quot;d&quot; &apos;e&apos; f</name>"
        ));
        assert!(xml.contains("<txt-record>sysinfo=r&lt;1&gt; x&amp;y</txt-record>"));
        assert!(xml.contains("<txt-record>optinfo=-DX=&quot;&lt;&amp;&gt;&quot;</txt-record>"));
        assert!(xml.contains("<txt-record>version=&apos;v&apos;</txt-record>"));
        assert!(xml.contains("<txt-record>certinfo=c </txt-record>"));
    }

    #[test]
    fn optinfo_format() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(optinfo(&[], &[], &[], None), "");
        assert_eq!(optinfo(&[], &[], &[], Some("/rt")), "-R/rt");
        assert_eq!(optinfo(&s(&["/inc"]), &[], &[], None), "-I/inc");
        assert_eq!(
            optinfo(
                &s(&["/i1", "/i2"]),
                &s(&["A=1", "B"]),
                &s(&["CONFIG_X=y"]),
                Some("/usr/share/systemtap/runtime"),
            ),
            "-R/usr/share/systemtap/runtime -BCONFIG_X=y -DA=1 -DB -I/i1 -I/i2"
        );
    }

    #[test]
    fn file_names() {
        assert_eq!(
            Publisher::file_name("stap-6.1_x.86"),
            "stap-server-stap-6.1_x.86.service"
        );
        assert_eq!(
            Publisher::file_name("../a/b"),
            "stap-server-..%2Fa%2Fb.service"
        );
        assert_eq!(Publisher::file_name("a%2F"), "stap-server-a%252F.service");
        assert_eq!(Publisher::file_name("ü"), "stap-server-%C3%BC.service");
        assert_eq!(Publisher::file_name(""), "stap-server-.service");
        for key in ["plain", "../a/b", "a%2F", "ü", "", "a b\n"] {
            let name = Publisher::file_name(key);
            assert!(!name.contains('/') && !name.starts_with('.'), "{name}");
            assert_eq!(key_of(&name).as_deref(), Some(key));
        }
        for stray in [
            "stap-server-x.service.tmp",
            ".stap-server-x.service.tmp",
            "stap-server-%zz.service",
            "stap-server-%2.service",
            "stap-server-%2d.service", // we would write '-' as is
            "stap-server-%FF.service", // not UTF-8
            "ssh.service",
        ] {
            assert_eq!(key_of(stray), None, "{stray}");
        }
    }

    #[test]
    fn publish_withdraw_published() {
        let dir = tempfile::tempdir().unwrap();
        let p = Publisher::new(dir.path());
        let a = example();

        assert!(!p.is_published("stap-a", &a));
        assert!(p.publish("stap-a", &a).unwrap());
        assert!(p.is_published("stap-a", &a));
        assert!(
            !p.publish("stap-a", &a).unwrap(),
            "identical content is not rewritten"
        );
        let path = dir.path().join("stap-server-stap-a.service");
        assert_eq!(fs::read_to_string(&path).unwrap(), service_xml(&a));
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o644);

        let b = Advert {
            port: 5601,
            ..a.clone()
        };
        assert!(p.publish("stap-a", &b).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), service_xml(&b));

        assert!(p.publish("stap-b", &a).unwrap());
        assert!(p.publish("other/x", &a).unwrap());
        fs::write(dir.path().join("ssh.service"), "not ours").unwrap();
        fs::write(dir.path().join(".stap-server-stap-c.service.tmp"), "").unwrap();

        let mut all = vec!["other/x", "stap-a", "stap-b"];
        assert_eq!(p.published("").unwrap(), all);
        assert_eq!(p.published("stap-").unwrap(), ["stap-a", "stap-b"]);
        assert!(p.published("nope").unwrap().is_empty());

        // No temporary file of ours is left behind.
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        names.sort();
        assert_eq!(names, [".stap-server-stap-c.service.tmp"]);

        assert!(p.withdraw("stap-a").unwrap());
        assert!(!p.withdraw("stap-a").unwrap());
        assert!(!path.exists());
        all.retain(|k| *k != "stap-a");
        assert_eq!(p.published("").unwrap(), all);
        assert!(dir.path().join("ssh.service").exists());
    }

    #[test]
    fn missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = Publisher::new(dir.path().join("missing"));
        let err = p.publish("stap-a", &example()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(!p.withdraw("stap-a").unwrap());
        assert!(p.published("").unwrap().is_empty());
    }
}
