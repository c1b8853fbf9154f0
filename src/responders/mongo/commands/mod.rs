//! Command dispatch: the table of every command the responder answers
//! (name, whether it is allowed before authentication, handler), the
//! reply and error shapes all commands share, and one file per command
//! family. A table rather than one big `match` keeps each family's code
//! next to its kin and makes `COMMANDS` (the metrics labels) follow from
//! the same list. Names are matched exactly, as a real server does
//! (`isMaster` and `ismaster` are separate entries).

mod admin;
mod aggregate;
mod auth;
mod crud;
mod cursors;
mod handshake;
mod indexes;
mod transactions;

use bson::{doc, Document};

use super::store::LAST_DUP;
use super::{Conn, MongoService};

/// A command failure: `ok: 0` with a code.
#[derive(Debug)]
struct CmdError(i32, String);

impl From<(i32, String)> for CmdError {
    fn from((c, m): (i32, String)) -> Self {
        CmdError(c, m)
    }
}

type CmdResult = Result<Document, CmdError>;

fn code_name(code: i32) -> &'static str {
    match code {
        2 => "BadValue",
        9 => "FailedToParse",
        13 => "Unauthorized",
        14 => "TypeMismatch",
        18 => "AuthenticationFailed",
        26 => "NamespaceNotFound",
        27 => "IndexNotFound",
        28 => "PathNotViable",
        43 => "CursorNotFound",
        48 => "NamespaceExists",
        59 => "CommandNotFound",
        146 => "ExceededMemoryLimit",
        11000 => "DuplicateKey",
        40324 => "Location40324",
        _ => "Location",
    }
}

pub(super) fn error_doc(code: i32, msg: &str) -> Document {
    doc! {"ok": 0.0, "errmsg": msg, "code": code, "codeName": code_name(code)}
}

/// What a handler sees of one command call.
struct Call<'a> {
    svc: &'a MongoService,
    conn: &'a mut Conn,
    /// The command name as sent (an alias such as `isMaster` or
    /// `findandmodify` included).
    name: &'a str,
    /// `$db`, or `admin` when absent.
    db: String,
    body: &'a Document,
}

impl Call<'_> {
    /// The collection the command names: the value of its first field.
    fn coll(&self) -> Result<String, CmdError> {
        let name = self.name;
        self.body
            .get_str(name)
            .map(String::from)
            .map_err(|_| CmdError(2, format!("collection name has invalid type for {name}")))
    }
}

type Handler = fn(&mut Call) -> CmdResult;

/// The commands that may make the stored data bigger, refused past the
/// memory budget (deletes, reads and drops still run, so a program can
/// make room).
const GROWS: &[&str] = &[
    "insert",
    "update",
    "findAndModify",
    "create",
    "createIndexes",
];

struct CmdDef {
    name: &'static str,
    /// Allowed before authentication when users are configured.
    open: bool,
    run: Handler,
}

const OPEN: bool = true;
const AUTH: bool = false;

const fn cmd(name: &'static str, open: bool, run: Handler) -> CmdDef {
    CmdDef { name, open, run }
}

/// Every command the responder answers.
static TABLE: [CmdDef; 38] = {
    use admin as ad;
    use aggregate as ag;
    use auth as au;
    use crud as c;
    use cursors as cu;
    use handshake as h;
    use indexes as ix;
    use transactions as tx;
    [
        cmd("hello", OPEN, h::hello),
        cmd("isMaster", OPEN, h::hello),
        cmd("ismaster", OPEN, h::hello),
        cmd("ping", OPEN, ack),
        cmd("endSessions", OPEN, ack),
        cmd("killSessions", AUTH, ack),
        cmd("logout", OPEN, ack),
        cmd("refreshSessions", AUTH, ack),
        cmd("commitTransaction", AUTH, tx::end_txn),
        cmd("abortTransaction", AUTH, tx::end_txn),
        cmd("buildInfo", OPEN, h::build_info),
        cmd("buildinfo", OPEN, h::build_info),
        cmd("getParameter", AUTH, h::get_parameter),
        cmd("whatsmyuri", AUTH, h::whatsmyuri),
        cmd("connectionStatus", OPEN, h::connection_status),
        cmd("saslStart", OPEN, au::sasl_start),
        cmd("saslContinue", OPEN, au::sasl_continue),
        cmd("serverStatus", AUTH, h::server_status),
        cmd("listDatabases", AUTH, ad::list_databases),
        cmd("listCollections", AUTH, ad::list_collections),
        cmd("create", AUTH, ad::create),
        cmd("drop", AUTH, ad::drop_collection),
        cmd("dropDatabase", AUTH, ad::drop_database),
        cmd("insert", AUTH, c::insert),
        cmd("find", AUTH, c::find),
        cmd("getMore", AUTH, cu::get_more),
        cmd("killCursors", AUTH, cu::kill_cursors),
        cmd("count", AUTH, c::count),
        cmd("distinct", AUTH, c::distinct),
        cmd("aggregate", AUTH, ag::aggregate),
        cmd("update", AUTH, c::update),
        cmd("delete", AUTH, c::delete),
        cmd("findAndModify", AUTH, c::find_and_modify),
        cmd("findandmodify", AUTH, c::find_and_modify),
        cmd("createIndexes", AUTH, ix::create_indexes),
        cmd("listIndexes", AUTH, ix::list_indexes),
        cmd("dropIndexes", AUTH, ix::drop_indexes),
        cmd("deleteIndexes", AUTH, ix::drop_indexes),
    ]
};

/// The commands the responder answers (anything else is `unknown` in
/// metrics, so labels stay bounded).
pub const COMMANDS: &[&str] = &names(&TABLE);

const fn names<const N: usize>(table: &[CmdDef; N]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = table[i].name;
        i += 1;
    }
    out
}

/// `ping`, `endSessions` and the like: nothing to do, nothing to say.
fn ack(_: &mut Call) -> CmdResult {
    Ok(doc! {})
}

impl MongoService {
    /// Runs one command and returns its reply document.
    pub(super) fn run(&self, conn: &mut Conn, body: &Document) -> Document {
        let Some((name, _)) = body.iter().next() else {
            return error_doc(59, "no such command: ''");
        };
        let name = name.clone();
        LAST_DUP.with(|c| c.borrow_mut().take());
        match self.command(conn, &name, body) {
            Ok(mut d) => {
                if !d.contains_key("ok") {
                    d.insert("ok", 1.0);
                }
                d
            }
            Err(CmdError(code, msg)) => error_doc(code, &msg),
        }
    }

    fn command(&self, conn: &mut Conn, name: &str, body: &Document) -> CmdResult {
        let db = body.get_str("$db").unwrap_or("admin").to_string();
        let def = TABLE.iter().find(|d| d.name == name);
        // Authentication comes first when users are configured. `getnonce`
        // is let through, then fails as unknown.
        let open = def.map_or(name == "getnonce", |d| d.open);
        if !conn.authed && !open {
            return Err(CmdError(
                13,
                format!("Command {name} requires authentication"),
            ));
        }
        let Some(def) = def else {
            return Err(CmdError(59, format!("no such command: '{name}'")));
        };
        if GROWS.contains(&def.name) && crate::budget::over() {
            return Err(CmdError(
                146,
                format!(
                    "{name} refused: meshwrap is past its memory budget (--memory-budget {})",
                    crate::budget::describe(crate::budget::limit().unwrap_or(0))
                ),
            ));
        }
        (def.run)(&mut Call {
            svc: self,
            conn,
            name,
            db,
            body,
        })
    }
}
