//! The server side of SCRAM-SHA-256 and SCRAM-SHA-1 (RFC 5802/7677) as
//! MongoDB runs them through `saslStart`/`saslContinue`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use sha1::Sha1;
use sha2::Sha256;

use crate::rules::mongo::MongoUser;

const ITERATIONS: u32 = 15000;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mech {
    Sha1,
    Sha256,
}

fn hmac(m: Mech, key: &[u8], data: &[u8]) -> Vec<u8> {
    match m {
        Mech::Sha1 => {
            let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("any key length");
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        Mech::Sha256 => {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
    }
}

fn hash(m: Mech, data: &[u8]) -> Vec<u8> {
    match m {
        Mech::Sha1 => sha1::Sha1::digest(data).to_vec(),
        Mech::Sha256 => sha2::Sha256::digest(data).to_vec(),
    }
}

fn salted(m: Mech, user: &str, password: &str, salt: &[u8], iters: u32) -> Vec<u8> {
    match m {
        Mech::Sha1 => {
            // MongoDB's SCRAM-SHA-1 uses the legacy digest as the password.
            let digest = Md5::digest(format!("{user}:mongo:{password}").as_bytes());
            let hexed: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            let mut out = [0u8; 20];
            pbkdf2::pbkdf2_hmac::<Sha1>(hexed.as_bytes(), salt, iters, &mut out);
            out.to_vec()
        }
        Mech::Sha256 => {
            let mut out = [0u8; 32];
            pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iters, &mut out);
            out.to_vec()
        }
    }
}

/// A failed proof (wrong password, unknown user, bad message).
#[derive(Debug)]
pub struct AuthFailed;

/// One authentication in progress on a connection.
#[derive(Debug)]
pub struct Conversation {
    mech: Mech,
    /// `None` for an unknown user: the exchange runs to the end and fails.
    salted: Option<Vec<u8>>,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    stage: u8,
}

fn attr<'a>(msg: &'a str, key: &str) -> Option<&'a str> {
    msg.split(',')
        .find_map(|p| p.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

impl Conversation {
    /// Handles the client-first message; returns the server-first one.
    pub fn start(
        mechanism: &str,
        payload: &[u8],
        db: &str,
        users: &[MongoUser],
    ) -> Result<(Conversation, Vec<u8>), String> {
        let mech = match mechanism {
            "SCRAM-SHA-256" => Mech::Sha256,
            "SCRAM-SHA-1" => Mech::Sha1,
            other => {
                return Err(format!(
                    "Received authentication for mechanism {other} which is not enabled"
                ))
            }
        };
        let msg = std::str::from_utf8(payload).map_err(|_| "Authentication failed.".to_string())?;
        // gs2 header: "n,," (or "y,,"/"p=..."), then the bare message.
        let bare = msg
            .splitn(3, ',')
            .nth(2)
            .ok_or_else(|| "Authentication failed.".to_string())?
            .to_string();
        let user = attr(&bare, "n")
            .unwrap_or("")
            .replace("=2C", ",")
            .replace("=3D", "=");
        let cnonce = attr(&bare, "r").ok_or_else(|| "Authentication failed.".to_string())?;
        let salt: [u8; 16] = rand::random();
        let snonce = B64.encode(rand::random::<[u8; 24]>());
        let nonce = format!("{cnonce}{snonce}");
        let server_first = format!("r={nonce},s={},i={ITERATIONS}", B64.encode(salt));
        let salted = users
            .iter()
            .find(|u| u.user == user && u.db == db)
            .map(|u| salted(mech, &u.user, &u.password, &salt, ITERATIONS));
        Ok((
            Conversation {
                mech,
                salted,
                client_first_bare: bare,
                server_first: server_first.clone(),
                nonce,
                stage: 1,
            },
            server_first.into_bytes(),
        ))
    }

    /// Handles the next client message: `(reply, done)`.
    pub fn step(&mut self, payload: &[u8]) -> Result<(Vec<u8>, bool), AuthFailed> {
        if self.stage == 2 {
            self.stage = 3;
            return Ok((Vec::new(), true));
        }
        if self.stage != 1 {
            return Err(AuthFailed);
        }
        let msg = std::str::from_utf8(payload).map_err(|_| AuthFailed)?;
        let proof_at = msg.rfind(",p=").ok_or(AuthFailed)?;
        let without_proof = &msg[..proof_at];
        let proof = B64.decode(&msg[proof_at + 3..]).map_err(|_| AuthFailed)?;
        if attr(msg, "r") != Some(self.nonce.as_str()) {
            return Err(AuthFailed);
        }
        let salted = self.salted.as_ref().ok_or(AuthFailed)?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let m = self.mech;
        let client_key = hmac(m, salted, b"Client Key");
        let stored_key = hash(m, &client_key);
        let signature = hmac(m, &stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(AuthFailed);
        }
        let recovered: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        if hash(m, &recovered) != stored_key {
            return Err(AuthFailed);
        }
        let server_key = hmac(m, salted, b"Server Key");
        let server_sig = hmac(m, &server_key, auth_message.as_bytes());
        self.stage = 2;
        Ok((format!("v={}", B64.encode(server_sig)).into_bytes(), false))
    }
}
