//! The configuration parsers on arbitrary bytes: the global file and a server file. Beyond
//! "no panic, no hang": every error names the file and a line that exists, errors come in
//! line order, and reading a global file over its own result changes nothing.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use stap_server::config::{self, ConfigError, GlobalConfig};

fn check_errors(errors: &[ConfigError], file: &Path, input: &[u8]) {
    let lines = input.split(|b| *b == b'\n').count();
    assert!(!errors.is_empty(), "an Err carries at least one error");
    let mut last = 0;
    for e in errors {
        assert_eq!(e.file, file);
        assert!(e.line <= lines, "line {} of {lines}: {e}", e.line);
        assert!(e.line >= last, "errors out of line order");
        last = e.line;
        assert!(!e.message.is_empty());
        assert!(e.to_string().starts_with(&file.display().to_string()));
    }
}

fuzz_target!(|input: &[u8]| {
    let global_file = Path::new("/etc/sysconfig/stap-server");
    let base = GlobalConfig::default();
    match config::parse_global(input, global_file, &base) {
        Ok(cfg) => {
            let again = config::parse_global(input, global_file, &cfg)
                .expect("a file that parsed once parses again");
            assert_eq!(again, cfg, "a global file read twice is read once");
        }
        Err(errors) => check_errors(&errors, global_file, input),
    }

    let server_file = Path::new("/etc/stap-server/conf.d/fuzz.conf");
    if let Err(errors) = config::parse_server(input, server_file) {
        check_errors(&errors, server_file, input);
    }
});
