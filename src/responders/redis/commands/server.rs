//! Server and tooling commands: INFO, COMMAND, CONFIG, databases,
//! introspection (OBJECT, MEMORY) and PUBLISH. Enough of each for
//! redis-cli, redis-benchmark and client libraries to be satisfied.

use std::fmt::Write as _;

use bytes::Bytes;

use super::{clip, eq, glob, int, syntax, table, unknown_subcommand, wrong_args, Ctx, R};
use crate::responders::redis::resp::Reply;
use crate::responders::redis::state::now_ms;
use crate::responders::redis::REDIS_VERSION;

pub fn ok(_c: &mut Ctx, _a: &[Bytes]) -> R {
    Ok(Reply::Ok)
}

pub fn echo(_c: &mut Ctx, a: &[Bytes]) -> R {
    Ok(Reply::Bulk(a[1].clone()))
}

pub fn time(_c: &mut Ctx, _a: &[Bytes]) -> R {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Ok(Reply::Array(vec![
        Reply::bulk(now.as_secs().to_string()),
        Reply::bulk(now.subsec_micros().to_string()),
    ]))
}

pub fn lastsave(c: &mut Ctx, _a: &[Bytes]) -> R {
    Ok(Reply::Int(c.svc.started_ms / 1000))
}

pub fn bgsave(_c: &mut Ctx, _a: &[Bytes]) -> R {
    Ok(Reply::simple("Background saving started"))
}

pub fn wait(_c: &mut Ctx, a: &[Bytes]) -> R {
    int(&a[1])?;
    int(&a[2])?;
    Ok(Reply::Int(0))
}

pub fn role(_c: &mut Ctx, _a: &[Bytes]) -> R {
    Ok(Reply::Array(vec![
        Reply::bulk("master"),
        Reply::Int(0),
        Reply::Array(vec![]),
    ]))
}

pub fn dbsize(c: &mut Ctx, _a: &[Bytes]) -> R {
    Ok(Reply::Int(c.db().len() as i64))
}

fn flush_mode(a: &[Bytes]) -> Result<(), Reply> {
    match a.get(1) {
        None => Ok(()),
        Some(m) if a.len() == 2 && (eq(m, "async") || eq(m, "sync")) => Ok(()),
        Some(_) => Err(syntax()),
    }
}

pub fn flushdb(c: &mut Ctx, a: &[Bytes]) -> R {
    flush_mode(a)?;
    let i = c.conn.db;
    c.store.dbs[i].map.clear();
    c.store.touch_db(i);
    Ok(Reply::Ok)
}

pub fn flushall(c: &mut Ctx, a: &[Bytes]) -> R {
    flush_mode(a)?;
    for i in 0..c.store.dbs.len() {
        c.store.dbs[i].map.clear();
        c.store.touch_db(i);
    }
    Ok(Reply::Ok)
}

pub fn swapdb(c: &mut Ctx, a: &[Bytes]) -> R {
    let n = c.store.dbs.len() as i64;
    let idx = |b: &[u8], which: &str| -> Result<usize, Reply> {
        let v = crate::responders::redis::resp::parse_i64(b)
            .ok_or_else(|| Reply::Error(format!("ERR invalid {which} DB index")))?;
        if v < 0 || v >= n {
            return Err(Reply::err("ERR DB index is out of range"));
        }
        Ok(v as usize)
    };
    let (x, y) = (idx(&a[1], "first")?, idx(&a[2], "second")?);
    c.store.dbs.swap(x, y);
    c.store.touch_db(x);
    c.store.touch_db(y);
    Ok(Reply::Ok)
}

pub fn object(c: &mut Ctx, a: &[Bytes]) -> R {
    let sub = &a[1];
    if eq(sub, "help") {
        return Ok(super::bulks(
            [
                "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "ENCODING <key>",
                "FREQ <key>",
                "IDLETIME <key>",
                "REFCOUNT <key>",
            ]
            .into_iter()
            .map(|s: &'static str| Bytes::from_static(s.as_bytes())),
        ));
    }
    let known = ["encoding", "refcount", "idletime", "freq"];
    if !known.iter().any(|k| eq(sub, k)) {
        return Err(unknown_subcommand(sub, "object"));
    }
    if a.len() != 3 {
        return Err(wrong_args(&format!(
            "object|{}",
            clip(sub).to_ascii_lowercase()
        )));
    }
    let Some(e) = c.db().get(&a[2]) else {
        return Ok(Reply::Nil);
    };
    if eq(sub, "encoding") {
        return Ok(Reply::bulk(e.value.encoding()));
    }
    if eq(sub, "refcount") {
        return Ok(Reply::Int(1));
    }
    if eq(sub, "idletime") {
        return Ok(Reply::Int(0));
    }
    Err(Reply::err("ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust."))
}

pub fn memory(c: &mut Ctx, a: &[Bytes]) -> R {
    let sub = &a[1];
    if eq(sub, "usage") {
        if a.len() < 3 {
            return Err(wrong_args("memory|usage"));
        }
        if a.len() > 3 && !(a.len() == 5 && eq(&a[3], "samples")) {
            return Err(syntax());
        }
        return Ok(match c.db().get(&a[2]) {
            Some(e) => Reply::Int((e.value.approx_size() + a[2].len() + 56) as i64),
            None => Reply::Nil,
        });
    }
    if eq(sub, "doctor") {
        return Ok(Reply::Verbatim("Hi Sam, I can't find any memory issue in your instance. I can only account for what occurs on this base.".into()));
    }
    if eq(sub, "purge") {
        return Ok(Reply::Ok);
    }
    if eq(sub, "stats") {
        return Ok(Reply::Map(vec![(
            Reply::bulk("peak.allocated"),
            Reply::Int(0),
        )]));
    }
    Err(unknown_subcommand(sub, "memory"))
}

pub fn publish(c: &mut Ctx, a: &[Bytes]) -> R {
    Ok(Reply::Int(c.svc.publish(&a[1], &a[2]) as i64))
}

pub fn pubsub(c: &mut Ctx, a: &[Bytes]) -> R {
    let sub = &a[1];
    if eq(sub, "channels") {
        let chans = c.svc.pubsub_channels();
        let pat = a.get(2);
        return Ok(super::bulks(
            chans
                .into_iter()
                .filter(|ch| pat.is_none_or(|p| glob(p, ch))),
        ));
    }
    if eq(sub, "numsub") {
        let counts = c.svc.pubsub_numsub(&a[2..]);
        // A flat array in both protocols, as Redis answers.
        return Ok(Reply::Array(
            counts
                .into_iter()
                .flat_map(|(ch, n)| [Reply::Bulk(ch), Reply::Int(n as i64)])
                .collect(),
        ));
    }
    if eq(sub, "numpat") {
        return Ok(Reply::Int(c.svc.pubsub_numpat() as i64));
    }
    Err(unknown_subcommand(sub, "pubsub"))
}

/// The configuration values CONFIG GET reports (and CONFIG SET changes,
/// without effect beyond the answer).
pub fn default_config(
    databases: usize,
    password: Option<&str>,
    port: u16,
) -> Vec<(String, String)> {
    let maxmemory = crate::budget::limit().unwrap_or(0).to_string();
    [
        ("save", ""),
        ("appendonly", "no"),
        ("appendfsync", "everysec"),
        ("maxmemory", &maxmemory),
        ("maxmemory-policy", "noeviction"),
        ("maxclients", "10000"),
        ("timeout", "0"),
        ("tcp-keepalive", "300"),
        ("notify-keyspace-events", ""),
        ("proto-max-bulk-len", "536870912"),
        (
            "client-output-buffer-limit",
            "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60",
        ),
        ("lua-time-limit", "5000"),
        ("busy-reply-threshold", "5000"),
        ("slowlog-log-slower-than", "10000"),
        ("slowlog-max-len", "128"),
        ("hash-max-listpack-entries", "128"),
        ("hash-max-listpack-value", "64"),
        ("list-max-listpack-size", "-2"),
        ("set-max-intset-entries", "512"),
        ("zset-max-listpack-entries", "128"),
        ("cluster-enabled", "no"),
        ("bind", "* -::*"),
        ("protected-mode", "no"),
        ("dir", "/data"),
        ("dbfilename", "dump.rdb"),
        ("loglevel", "notice"),
        ("replica-read-only", "yes"),
        ("io-threads", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain([
        ("databases".to_string(), databases.to_string()),
        ("port".to_string(), port.to_string()),
        (
            "requirepass".to_string(),
            password.unwrap_or("").to_string(),
        ),
    ])
    .collect()
}

/// Settings Redis knows by two names.
const CONFIG_ALIASES: &[(&str, &str)] = &[("busy-reply-threshold", "lua-time-limit")];

pub fn config(c: &mut Ctx, a: &[Bytes]) -> R {
    let sub = &a[1];
    if eq(sub, "get") {
        if a.len() < 3 {
            return Err(wrong_args("config|get"));
        }
        let cfg = c.svc.config.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (k, v) in cfg.iter() {
            if a[2..]
                .iter()
                .any(|p| glob(&p.to_ascii_lowercase(), k.as_bytes()))
            {
                out.push((Reply::bulk(k.clone()), Reply::bulk(v.clone())));
            }
        }
        return Ok(Reply::Map(out));
    }
    if eq(sub, "set") {
        if a.len() < 4 || !a.len().is_multiple_of(2) {
            return Err(wrong_args("config|set"));
        }
        let mut cfg = c.svc.config.lock().unwrap_or_else(|e| e.into_inner());
        for kv in a[2..].chunks(2) {
            let k = String::from_utf8_lossy(&kv[0]).to_ascii_lowercase();
            let v = String::from_utf8_lossy(&kv[1]).into_owned();
            // A name and its alias are one setting.
            let alias = CONFIG_ALIASES
                .iter()
                .find_map(|(x, y)| (*x == k).then_some(*y).or((*y == k).then_some(*x)));
            for name in std::iter::once(k.as_str()).chain(alias) {
                match cfg.iter_mut().find(|(n, _)| n == name) {
                    Some(slot) => slot.1 = v.clone(),
                    None => cfg.push((name.to_string(), v.clone())),
                }
            }
        }
        return Ok(Reply::Ok);
    }
    if eq(sub, "resetstat") || eq(sub, "rewrite") {
        return Ok(Reply::Ok);
    }
    Err(unknown_subcommand(sub, "config"))
}

/// `COMMAND`'s description of one command (Redis 7's ten fields).
fn command_entry(d: &super::CmdDef) -> Reply {
    Reply::Array(vec![
        Reply::bulk(d.name),
        Reply::Int(i64::from(d.arity)),
        Reply::Set(d.flag_names().into_iter().map(Reply::simple).collect()),
        Reply::Int(i64::from(d.first_key)),
        Reply::Int(i64::from(d.last_key)),
        Reply::Int(i64::from(d.step)),
        Reply::Set(vec![]),
        Reply::Set(vec![]),
        Reply::Set(vec![]),
        Reply::Array(vec![]),
    ])
}

fn group_of(d: &super::CmdDef) -> &'static str {
    let n = d.name;
    match n.as_bytes()[0] {
        b'h' if n != "hello" => "hash",
        b'l' if n != "lastsave" => "list",
        b'b' if n != "bgsave" => "list",
        b'z' => "sorted-set",
        b's' if n.starts_with("s")
            && ![
                "set",
                "setnx",
                "setex",
                "setrange",
                "substr",
                "strlen",
                "save",
                "select",
                "scan",
                "script",
                "swapdb",
                "subscribe",
            ]
            .contains(&n) =>
        {
            "set"
        }
        _ => "generic",
    }
}

pub fn command(_c: &mut Ctx, a: &[Bytes]) -> R {
    let t = table();
    let mut sorted: Vec<&super::CmdDef> = t.values().collect();
    sorted.sort_by_key(|d| d.name);
    let Some(sub) = a.get(1) else {
        return Ok(Reply::Array(
            sorted.into_iter().map(command_entry).collect(),
        ));
    };
    let lookup = |b: &Bytes| t.get(String::from_utf8_lossy(b).to_ascii_lowercase().as_str());
    if eq(sub, "count") {
        return Ok(Reply::Int(t.len() as i64));
    }
    if eq(sub, "info") {
        if a.len() == 2 {
            return Ok(Reply::Array(
                sorted.into_iter().map(command_entry).collect(),
            ));
        }
        return Ok(Reply::Array(
            a[2..]
                .iter()
                .map(|n| lookup(n).map_or(Reply::NilArray, command_entry))
                .collect(),
        ));
    }
    if eq(sub, "list") {
        return Ok(super::bulks(
            sorted
                .into_iter()
                .map(|d| Bytes::from_static(d.name.as_bytes())),
        ));
    }
    if eq(sub, "docs") {
        let wanted: Vec<&super::CmdDef> = if a.len() == 2 {
            sorted
        } else {
            a[2..].iter().filter_map(lookup).collect()
        };
        return Ok(Reply::Map(
            wanted
                .into_iter()
                .map(|d| {
                    (
                        Reply::bulk(d.name),
                        Reply::Map(vec![
                            (
                                Reply::bulk("summary"),
                                Reply::bulk(format!(
                                    "{} (meshwrap mock)",
                                    d.name.to_ascii_uppercase()
                                )),
                            ),
                            (Reply::bulk("since"), Reply::bulk("1.0.0")),
                            (Reply::bulk("group"), Reply::bulk(group_of(d))),
                        ]),
                    )
                })
                .collect(),
        ));
    }
    if eq(sub, "getkeys") {
        let Some(d) = a.get(2).and_then(lookup) else {
            return Err(Reply::err("ERR Invalid command specified"));
        };
        if !d.arity_ok(a.len() - 2) {
            return Err(Reply::err(
                "ERR Invalid number of arguments specified for command",
            ));
        }
        let keys = d.keys(&a[2..]);
        if keys.is_empty() {
            return Err(Reply::err("ERR The command has no key arguments"));
        }
        return Ok(super::bulks(keys.into_iter().cloned()));
    }
    if eq(sub, "help") {
        return Ok(super::bulks(
            [
                "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "COUNT",
                "DOCS",
                "GETKEYS",
                "INFO",
                "LIST",
            ]
            .into_iter()
            .map(|s: &'static str| Bytes::from_static(s.as_bytes())),
        ));
    }
    Err(unknown_subcommand(sub, "command"))
}

/// `INFO [section ...]`: Redis's sections with the fields tools read
/// (`loading`, `blocked_clients`, `role`, `redis_version`, keyspace).
pub fn info(c: &mut Ctx, a: &[Bytes]) -> R {
    let want: Vec<String> = a[1..]
        .iter()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
        .collect();
    let all = want.is_empty()
        || want
            .iter()
            .any(|w| w == "all" || w == "everything" || w == "default");
    let on = |s: &str| all || want.iter().any(|w| w == s);
    let svc = c.svc;
    let stats = svc.stats();
    let uptime = ((now_ms() - svc.started_ms) / 1000).max(0);
    let mut out = String::new();
    let mut section = |name: &str, body: String| {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let _ = write!(out, "# {name}\r\n{body}");
    };
    if on("server") {
        section(
            "Server",
            format!(
                "redis_version:{REDIS_VERSION}\r\nredis_git_sha1:00000000\r\nredis_git_dirty:0\r\nredis_build_id:meshwrap\r\nredis_mode:standalone\r\nos:Linux meshwrap\r\narch_bits:64\r\nmultiplexing_api:epoll\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nserver_time_usec:{}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\nhz:10\r\nexecutable:meshwrap\r\nconfig_file:\r\n",
                std::process::id(),
                svc.run_id,
                svc.port,
                now_ms() * 1000,
                uptime / 86400
            ),
        );
    }
    if on("clients") {
        section(
            "Clients",
            format!(
                "connected_clients:{}\r\ncluster_connections:0\r\nmaxclients:10000\r\nblocked_clients:{}\r\ntracking_clients:0\r\npubsub_clients:{}\r\n",
                stats.connected, stats.blocked, stats.pubsub_clients
            ),
        );
    }
    // The process's resident size (what `--memory-budget` is compared
    // with); adding up the keyspace grew with it, on the data plane.
    let used = crate::budget::used().max(1_000_000);
    let max = crate::budget::limit().unwrap_or(0);
    let store = &mut *c.store;
    if on("memory") {
        section(
            "Memory",
            format!(
                "used_memory:{used}\r\nused_memory_human:{:.2}M\r\nused_memory_rss:{used}\r\nused_memory_peak:{used}\r\nmaxmemory:{max}\r\nmaxmemory_human:{:.2}M\r\nmaxmemory_policy:noeviction\r\nmem_fragmentation_ratio:1.00\r\nmem_allocator:libc\r\n",
                used as f64 / 1_048_576.0,
                max as f64 / 1_048_576.0
            ),
        );
    }
    if on("persistence") {
        section(
            "Persistence",
            format!(
                "loading:0\r\nasync_loading:0\r\nrdb_changes_since_last_save:{}\r\nrdb_bgsave_in_progress:0\r\nrdb_last_save_time:{}\r\nrdb_last_bgsave_status:ok\r\naof_enabled:0\r\naof_rewrite_in_progress:0\r\n",
                store.dirty,
                svc.started_ms / 1000
            ),
        );
    }
    if on("stats") {
        section(
            "Stats",
            format!(
                "total_connections_received:{}\r\ntotal_commands_processed:{}\r\ninstantaneous_ops_per_sec:0\r\nrejected_connections:0\r\nexpired_keys:0\r\nevicted_keys:0\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\npubsub_channels:{}\r\npubsub_patterns:{}\r\n",
                stats.connections, stats.commands, stats.hits, stats.misses, stats.channels, stats.patterns
            ),
        );
    }
    if on("replication") {
        section(
            "Replication",
            "role:master\r\nconnected_slaves:0\r\nmaster_failover_state:no-failover\r\nmaster_replid:0000000000000000000000000000000000000000\r\nmaster_repl_offset:0\r\n".into(),
        );
    }
    if on("cpu") {
        section(
            "CPU",
            "used_cpu_sys:0.000000\r\nused_cpu_user:0.000000\r\n".into(),
        );
    }
    if on("modules") {
        section("Modules", String::new());
    }
    if on("errorstats") {
        section("Errorstats", String::new());
    }
    if on("cluster") {
        section("Cluster", "cluster_enabled:0\r\n".into());
    }
    if on("keyspace") {
        let mut body = String::new();
        for (i, db) in store.dbs.iter_mut().enumerate() {
            let n = db.len();
            if n > 0 {
                let _ = write!(
                    body,
                    "db{i}:keys={n},expires={},avg_ttl=0\r\n",
                    db.expires_count()
                );
            }
        }
        section("Keyspace", body);
    }
    Ok(Reply::Verbatim(out))
}
