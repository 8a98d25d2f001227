//! `nodewright plugin new`: a plugin project that builds with one command
//! and passes `nodewright plugin check` as generated.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};

/// The contract the scaffolds target, embedded so a project outside this
/// repository has it.
const WIT: &str = include_str!("../../../../wit/v0.3.0/policy.wit");
/// The Rust SDK in this checkout (the default `--sdk`).
const SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../plugins/sdk");
/// Versions the Rust plugins of this checkout build with.
const PLUGINS_LOCK: &str = include_str!("../../../../plugins/Cargo.lock");
/// Pinned build tools of JavaScript plugins.
const JS_PACKAGE_VERSIONS: (&str, &str) = ("0.23.0", "1.35.0");
/// Pinned componentize-py.
const COMPONENTIZE_PY: &str = "0.25.1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Lang {
    Rust,
    Python,
    Js,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RoleArg {
    Selection,
    Consolidation,
}

#[derive(Debug, Args)]
pub(crate) struct NewArgs {
    /// Plugin name: lower-case letters, digits and `-`; also the directory.
    name: String,
    /// Language.
    #[arg(long, value_enum)]
    lang: Lang,
    /// Which decision it makes.
    #[arg(long, value_enum, default_value = "selection")]
    role: RoleArg,
    /// Parent directory of the project.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Path of the Rust SDK (`plugins/sdk` of a nodewright checkout).
    #[arg(long, default_value = SDK)]
    sdk: PathBuf,
}

pub(crate) fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    let name = &args.name;
    anyhow::ensure!(
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && name.starts_with(|c: char| c.is_ascii_lowercase()),
        "plugin name `{name}`: use lower-case letters, digits and `-`, starting with a letter"
    );
    let root = args.dir.join(name);
    anyhow::ensure!(!root.exists(), "{}: already exists", root.display());
    let (world, interface) = match args.role {
        RoleArg::Selection => ("instance-selector", "selection"),
        RoleArg::Consolidation => ("consolidator", "consolidation"),
    };
    let files = match args.lang {
        Lang::Rust => rust(name, args.role, &args.sdk)?,
        Lang::Python => python(name, args.role, world),
        Lang::Js => js(name, args.role, world),
    };
    for (path, text) in &files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("files live in the project")).with_context(|| format!("{}: cannot create", root.display()))?;
        std::fs::write(&path, text).with_context(|| format!("{}: cannot write", path.display()))?;
    }
    let build = match args.lang {
        Lang::Rust => "cargo build --release --target wasm32-wasip2".to_string(),
        Lang::Python => format!("componentize-py -d wit -w {world} componentize app -o {name}.wasm"),
        Lang::Js => "npm install && npm run build".to_string(),
    };
    let output = match args.lang {
        Lang::Rust => format!("target/wasm32-wasip2/release/{}.wasm", name.replace('-', "_")),
        _ => format!("{name}.wasm"),
    };
    println!("created {} ({:?} {interface} plugin)", root.display(), args.lang);
    println!("build:  cd {} && {build}", root.display());
    // JavaScript runs interpreted: ranking the whole 8,040-offering catalog
    // takes longer than the default 50 ms deadline.
    let limits = if args.lang == Lang::Js { " --selection-timeout-ms 1000" } else { "" };
    println!("check:  nodewright plugin check {}/{output}{limits}", root.display());
    Ok(ExitCode::SUCCESS)
}

fn rust(name: &str, role: RoleArg, sdk: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let sdk = sdk.canonicalize().with_context(|| format!("--sdk {}: not found (point it at plugins/sdk of a nodewright checkout)", sdk.display()))?;
    let feature = match role {
        RoleArg::Selection => "selector",
        RoleArg::Consolidation => "consolidator",
    };
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

# A workspace of its own: it builds for wasm32-wasip2.
[workspace]

[lib]
crate-type = ["cdylib"]

[dependencies]
nodewright-plugin = {{ path = "{sdk}", default-features = false, features = ["{feature}", "fleet"] }}
serde = {{ version = "1", features = ["derive"] }}

# Optimised for speed: a `rank` loops over thousands of offerings under a
# deadline, and at "s" the compiler neither unrolls nor inlines those loops.
[profile.release]
opt-level = 3
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#,
        sdk = sdk.display()
    );
    let lib = match role {
        RoleArg::Selection => format!(
            r#"//! `{name}`: which offering to buy (contract 0.3.0). Lower scores are
//! preferred; an offering left out is never bought. It starts from what one
//! more node adds to the bill given your commitments (`fleet()` holds them,
//! with the running nodes and recent failures per pool); add what matters
//! to you.

use nodewright_plugin::{{Catalog, Ranking, SelectionRequest, Selector, economics, fleet, score_feasible}};

struct Policy;

impl Selector for Policy {{
    fn rank(request: &SelectionRequest, catalog: &Catalog) -> Result<Ranking, String> {{
        let fleet = fleet();
        let mut prices = economics::prices(catalog.version, &fleet);
        // Each offering by catalog index: `catalog.offerings[i]` has the
        // rest of what is known of it (`score_each_indexed` hands it over,
        // and may leave an offering out).
        Ok(score_feasible(request, |index| prices.at(index)))
    }}
}}

nodewright_plugin::export!(Policy);
"#
        ),
        RoleArg::Consolidation => format!(
            r#"//! `{name}`: which nodes to remove. The host re-checks every action
//! (pods must fit elsewhere, budgets, PDBs, do-not-disrupt) before acting.

use nodewright_plugin::{{Action, Catalog, Consolidator, Snapshot}};

struct Policy;

impl Consolidator for Policy {{
    fn plan(snapshot: &Snapshot, _catalog: &Catalog) -> Result<Vec<Action>, String> {{
        // Delete every disruptable node that runs no pods.
        Ok(snapshot
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| node.disruptable && node.pods.is_empty())
            .map(|(index, _)| Action::Delete(vec![index as u32]))
            .collect())
    }}
}}

nodewright_plugin::export!(Policy);
"#
        ),
    };
    Ok(vec![
        ("Cargo.toml".into(), cargo),
        ("Cargo.lock".into(), PLUGINS_LOCK.to_string()),
        ("src/lib.rs".into(), lib),
        ("README.md".into(), readme(name, "cargo build --release --target wasm32-wasip2", &format!("target/wasm32-wasip2/release/{}.wasm", name.replace('-', "_")))),
    ])
}

fn python(name: &str, role: RoleArg, world: &str) -> Vec<(PathBuf, String)> {
    let app = match role {
        // The repository's example, which the tests hold to the Rust plugin.
        RoleArg::Selection => include_str!("../../../../plugins/python/commitment-aware/app.py").to_string(),
        RoleArg::Consolidation => format!(
            r#""""`{name}`: which nodes to remove. The host re-checks every action
(pods must fit elsewhere, budgets, PDBs, do-not-disrupt) before acting."""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import consolidation

_catalog = None
# The fleet (contract 0.3.0): running nodes, commitments, recent failures.
# It travels with the first call that uses a version (`snapshot.fleet`).
_fleet = None


class Catalog(exports.Catalog):
    def set_catalog(self, catalog) -> None:
        global _catalog
        _catalog = catalog


class Consolidation(exports.Consolidation):
    def plan(self, snapshot):
        global _fleet
        if snapshot.fleet is not None:
            _fleet = snapshot.fleet
        if _catalog is None or _catalog.version != snapshot.catalog_version:
            raise Err(f"request names catalog version {{snapshot.catalog_version}}, plugin holds another")
        # Delete every disruptable node that runs no pods.
        return [
            consolidation.Action_Delete([index])
            for index, node in enumerate(snapshot.nodes)
            if node.disruptable and not node.pods
        ]
"#
        ),
    };
    let build = format!("componentize-py -d wit -w {world} componentize app -o {name}.wasm");
    vec![
        ("app.py".into(), app),
        ("wit/policy.wit".into(), WIT.to_string()),
        ("requirements.txt".into(), format!("componentize-py=={COMPONENTIZE_PY}\n")),
        ("README.md".into(), readme(name, &format!("pip install -r requirements.txt && {build}"), &format!("{name}.wasm"))),
    ]
}

fn js(name: &str, role: RoleArg, world: &str) -> Vec<(PathBuf, String)> {
    let source = match role {
        RoleArg::Selection => include_str!("../../../../plugins/js/commitment-aware/commitment-aware.js").to_string(),
        RoleArg::Consolidation => r#"// Which nodes to remove. The host re-checks every action (pods must fit
// elsewhere, budgets, PDBs, do-not-disrupt) before acting.

let held = null;
// The fleet (contract 0.3.0): running nodes, commitments, recent failures.
// It travels with the first call that uses a version (`snapshot.fleet`).
let fleet = null;

export const catalog = {
  setCatalog(c) {
    held = c;
  },
};

export const consolidation = {
  plan(snapshot) {
    if (snapshot.fleet !== undefined && snapshot.fleet !== null) {
      fleet = snapshot.fleet;
    }
    if (held === null || held.version !== snapshot.catalogVersion) {
      throw `request names catalog version ${snapshot.catalogVersion}, plugin holds another`;
    }
    // Delete every disruptable node that runs no pods.
    const actions = [];
    snapshot.nodes.forEach((node, index) => {
      if (node.disruptable && node.pods.length === 0) {
        actions.push({ tag: "delete", val: [index] });
      }
    });
    return actions;
  },
};
"#
        .to_string(),
    };
    let (componentize_js, jco) = JS_PACKAGE_VERSIONS;
    let package = format!(
        r#"{{
  "name": "{name}",
  "private": true,
  "type": "module",
  "scripts": {{
    "build": "componentize-js {name}.js --wit wit --world-name {world} -d http fetch-event -o {name}.wasm"
  }},
  "devDependencies": {{
    "@bytecodealliance/componentize-js": "{componentize_js}",
    "@bytecodealliance/jco": "{jco}"
  }}
}}
"#
    );
    vec![
        (format!("{name}.js").into(), source),
        ("package.json".into(), package),
        ("wit/policy.wit".into(), WIT.to_string()),
        ("README.md".into(), readme(name, "npm install && npm run build", &format!("{name}.wasm"))),
    ]
}

fn readme(name: &str, build: &str, output: &str) -> String {
    format!(
        "# {name}\n\nA nodewright policy plugin.\n\nBuild:\n\n```sh\n{build}\n```\n\nCheck it against the host's conformance suite and measure it:\n\n```sh\nnodewright plugin check {output}\nnodewright plugin bench {output}\n```\n\nThen compare it with the bundled policies: `nodewright compare --policy {output}`.\nSee docs/writing-a-policy.md in the nodewright repository.\n"
    )
}
