//! The node's identity on disk: an ed25519 private key in libp2p's protobuf encoding
//! (`PrivateKey { Type = Ed25519, Data = seed ‖ public }`, the bytes rust-libp2p's
//! `Keypair::to_protobuf_encoding` and go-libp2p's `crypto.MarshalPrivateKey` produce), in a
//! file of mode `0600`.
//!
//! [`create`] refuses to overwrite an existing file; [`load`] refuses a file that group or
//! others may read or write (as ssh does), so a key copied carelessly is noticed.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use meshwire::core::{IdentityError, Keypair};
use thiserror::Error;

/// The largest key file read (a protobuf ed25519 key is 68 bytes; the legacy form 100).
pub const MAX_KEY_FILE: u64 = 4096;

/// Why a key file could not be written or read.
#[derive(Debug, Error)]
pub enum KeyFileError {
    /// The file exists; `id new` never overwrites a key.
    #[error("{0}: already exists (refusing to overwrite a key)")]
    Exists(PathBuf),
    /// Reading or writing failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        error: io::Error,
    },
    /// Group or others may access the file.
    #[error("{path}: permissions {mode:04o} are too open (group or others can access the key); run `chmod 600 {path}`")]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Larger than [`MAX_KEY_FILE`].
    #[error("{0}: too large for a key file (more than {MAX_KEY_FILE} bytes)")]
    TooLarge(PathBuf),
    /// Not a libp2p protobuf ed25519 private key.
    #[error("{path}: not an ed25519 private key in libp2p's protobuf encoding: {error}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        error: IdentityError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyFileError + '_ {
    move |error| KeyFileError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Generates a key and writes it to `path` (created with mode `0600`, never overwritten).
///
/// # Errors
///
/// [`KeyFileError::Exists`] if `path` exists, [`KeyFileError::Io`] if it cannot be written.
pub fn create(path: &Path) -> Result<Keypair, KeyFileError> {
    let key = Keypair::generate();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| {
            if error.kind() == io::ErrorKind::AlreadyExists {
                KeyFileError::Exists(path.to_path_buf())
            } else {
                io_err(path)(error)
            }
        })?;
    // The umask may only remove bits from 0600; set it exactly anyway.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_err(path))?;
    file.write_all(&key.to_protobuf_encoding())
        .and_then(|()| file.sync_all())
        .map_err(io_err(path))?;
    Ok(key)
}

/// Reads the key at `path`.
///
/// # Errors
///
/// [`KeyFileError::TooOpen`] if group or others have any permission on it, [`KeyFileError::Io`]
/// if it cannot be read, [`KeyFileError::TooLarge`] / [`KeyFileError::Decode`] if it is not a key.
pub fn load(path: &Path) -> Result<Keypair, KeyFileError> {
    let file = fs::File::open(path).map_err(io_err(path))?;
    let meta = file.metadata().map_err(io_err(path))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    if meta.len() > MAX_KEY_FILE {
        return Err(KeyFileError::TooLarge(path.to_path_buf()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(KeyFileError::TooLarge(path.to_path_buf()));
    }
    Keypair::from_protobuf_encoding(&bytes).map_err(|error| KeyFileError::Decode {
        path: path.to_path_buf(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_then_load_gives_the_same_identity_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let key = create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load(&path).unwrap().peer_id(), key.peer_id());
        // The bytes are libp2p's protobuf encoding.
        assert_eq!(fs::read(&path).unwrap(), key.to_protobuf_encoding());
    }

    #[test]
    fn create_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        create(&path).unwrap();
        assert!(matches!(create(&path), Err(KeyFileError::Exists(_))));
    }

    #[test]
    fn load_refuses_group_or_world_access() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        create(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = load(&path).unwrap_err();
            assert!(
                matches!(err, KeyFileError::TooOpen { mode: m, .. } if m == mode),
                "{err}"
            );
        }
    }

    #[test]
    fn load_refuses_garbage_and_oversized_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.key");
        fs::write(&path, b"not a key").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(load(&path), Err(KeyFileError::Decode { .. })));
        fs::write(&path, vec![0u8; MAX_KEY_FILE as usize + 1]).unwrap();
        assert!(matches!(load(&path), Err(KeyFileError::TooLarge(_))));
        assert!(matches!(
            load(&dir.path().join("missing.key")),
            Err(KeyFileError::Io { .. })
        ));
    }
}
