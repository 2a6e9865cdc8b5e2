//! `auth enable | disable | status`, `user ...` and `role ...`: etcd's
//! role-based access control, with etcdctl 3.4's arguments, prompts,
//! messages and exit codes (`auth status` as etcdctl 3.5 prints it).
//!
//! Passwords are read before the client connects, as etcdctl reads them:
//! interactively (the default) with [`ask_password`], twice, or with
//! `--interactive=false` as one word from stdin ([`scan_word`]).

use std::io::{Read as _, Write as _};

use clap::{Args, Subcommand};
use raftkv_proto::authpb;
use raftkv_proto::etcdserverpb as pb;

use super::{emit, emit_bytes, Context};
use crate::error::CtlError;

/// Prints an answer: its protobuf encoding with `-w protobuf`, else what
/// `text` makes of it in the chosen format.
fn show<M: prost::Message>(
    ctx: &Context,
    message: &M,
    text: impl FnOnce() -> Result<String, CtlError>,
) -> Result<(), CtlError> {
    match ctx.printer.protobuf(message) {
        Some(bytes) => emit_bytes(&bytes),
        None => emit(&text()?),
    }
}

/// Go's `strconv.ParseBool`, for the flags etcdctl declares as Go bools
/// and scripts set as `--interactive=false`.
pub fn parse_go_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!(
            "strconv.ParseBool: parsing {}: invalid syntax",
            super::go_quote(text)
        )),
    }
}

/// `auth <subcommand>`.
#[derive(Subcommand, Clone, Debug)]
pub enum AuthCommand {
    /// Enables authentication.
    Enable {
        /// None.
        args: Vec<String>,
    },
    /// Disables authentication.
    Disable {
        /// None.
        args: Vec<String>,
    },
    /// Returns authentication status.
    Status {
        /// None.
        args: Vec<String>,
    },
}

/// `user <subcommand>`.
#[derive(Subcommand, Clone, Debug)]
pub enum UserCommand {
    /// Adds a new user.
    Add(UserAddArgs),
    /// Deletes a user.
    Delete {
        /// The user name.
        args: Vec<String>,
    },
    /// Gets detailed information of a user.
    Get(UserGetArgs),
    /// Lists all users.
    List {
        /// None.
        args: Vec<String>,
    },
    /// Changes password of user.
    Passwd(PasswdArgs),
    /// Grants a role to a user.
    GrantRole {
        /// The user name and the role name.
        args: Vec<String>,
    },
    /// Revokes a role from a user.
    RevokeRole {
        /// The user name and the role name.
        args: Vec<String>,
    },
}

/// `user add <user name or user:password> [options]`.
#[derive(Args, Clone, Debug)]
pub struct UserAddArgs {
    /// The user name, or `user:password`.
    pub args: Vec<String>,
    /// Read password from stdin instead of interactive terminal.
    #[arg(long, default_value = "true", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = parse_go_bool)]
    pub interactive: bool,
    /// Supply password from the command line flag.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub new_user_password: String,
    /// Create a user without password (CN based auth only).
    #[arg(long)]
    pub no_password: bool,
}

/// `user get <user name> [--detail]`.
#[derive(Args, Clone, Debug)]
pub struct UserGetArgs {
    /// The user name.
    pub args: Vec<String>,
    /// Show permissions of roles granted to the user.
    #[arg(long)]
    pub detail: bool,
}

/// `user passwd <user name> [--interactive=false]`.
#[derive(Args, Clone, Debug)]
pub struct PasswdArgs {
    /// The user name.
    pub args: Vec<String>,
    /// If true, read password from stdin instead of interactive terminal.
    #[arg(long, default_value = "true", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = parse_go_bool)]
    pub interactive: bool,
}

/// `role <subcommand>`.
#[derive(Subcommand, Clone, Debug)]
pub enum RoleCommand {
    /// Adds a new role.
    Add {
        /// The role name.
        args: Vec<String>,
    },
    /// Deletes a role.
    Delete {
        /// The role name.
        args: Vec<String>,
    },
    /// Gets detailed information of a role.
    Get {
        /// The role name.
        args: Vec<String>,
    },
    /// Lists all roles.
    List {
        /// None.
        args: Vec<String>,
    },
    /// Grants a key to a role.
    GrantPermission(PermissionArgs),
    /// Revokes a key from a role.
    RevokePermission(PermissionArgs),
}

/// `role grant-permission [options] <role name> <permission type> <key>
/// [endkey]` and `role revoke-permission <role name> <key> [endkey]`.
#[derive(Args, Clone, Debug)]
pub struct PermissionArgs {
    /// The role name, (for grant-permission) the permission type, the key
    /// and the optional end of the range.
    pub args: Vec<String>,
    /// The permission is for the keys starting with the key.
    #[arg(long)]
    pub prefix: bool,
    /// The permission is for the keys greater than or equal to the key
    /// (byte order).
    #[arg(long)]
    pub from_key: bool,
}

/// A password read before connecting (`user add`, `user passwd`).
#[derive(Clone, Debug, Default)]
pub struct Prepared {
    /// The user name and password `user add` or `user passwd` will send.
    pub user_password: Option<(String, String)>,
}

/// Reads what `user add` and `user passwd` need from the terminal or
/// stdin, before the client connects (and before it asks for `--user`'s
/// password), in etcdctl's order.
pub fn prepare_user(command: &UserCommand) -> Result<Prepared, CtlError> {
    let user_password = match command {
        UserCommand::Add(args) => Some(user_add_password(args)?),
        UserCommand::Passwd(args) => {
            if args.args.len() != 1 {
                return Err(CtlError::bad_args(
                    "user passwd command requires user name as its argument",
                ));
            }
            let name = args.args[0].clone();
            let password = if args.interactive {
                read_password_twice(&name)?
            } else {
                scan_word()
            };
            Some((name, password))
        }
        _ => None,
    };
    Ok(Prepared { user_password })
}

fn user_add_password(args: &UserAddArgs) -> Result<(String, String), CtlError> {
    if args.args.len() != 1 {
        return Err(CtlError::bad_args(
            "user add command requires user name as its argument",
        ));
    }
    let arg = &args.args[0];
    if args.no_password {
        return Ok((arg.clone(), String::new()));
    }
    if !args.new_user_password.is_empty() {
        return Ok((arg.clone(), args.new_user_password.clone()));
    }
    match arg.split_once(':') {
        Some((user, password)) => {
            if user.is_empty() {
                return Err(CtlError::bad_args("empty user name is not allowed"));
            }
            Ok((user.to_string(), password.to_string()))
        }
        None if args.interactive => Ok((arg.clone(), read_password_twice(arg)?)),
        None => Ok((arg.clone(), scan_word())),
    }
}

/// etcdctl's two prompts, refusing an empty password or two that differ.
fn read_password_twice(name: &str) -> Result<String, CtlError> {
    let first = ask_password(&format!("Password of {name}: "))
        .map_err(|e| CtlError::bad_args(format!("failed to ask password: {e}")))?;
    if first.is_empty() {
        return Err(CtlError::bad_args("empty password"));
    }
    let second = ask_password(&format!("Type password of {name} again for confirmation: "))
        .map_err(|e| CtlError::bad_args(format!("failed to ask password: {e}")))?;
    if first != second {
        return Err(CtlError::bad_args("given passwords are different"));
    }
    Ok(first)
}

/// Asks for a password as etcdctl's (speakeasy's) prompt does: the prompt
/// on stdout, terminal echo turned off by running `stty -echo` on our
/// stdin, one line read from stdin, echo turned back on, a newline on
/// stdout; surrounding white space is trimmed. Running stty keeps this free
/// of terminal ioctls of our own (no `unsafe`), and gives the same output
/// when stdin is not a terminal: stty complains on stderr and the line is
/// read all the same, which is how scripts and tests feed passwords.
pub fn ask_password(prompt: &str) -> Result<String, std::io::Error> {
    {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(prompt.as_bytes())?;
        stdout.flush()?;
    }
    stty("-echo")?;
    let line = read_line();
    stty("echo")?;
    {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(b"\n")?;
        stdout.flush()?;
    }
    Ok(line?.trim().to_string())
}

fn stty(setting: &str) -> Result<(), std::io::Error> {
    use std::os::unix::process::CommandExt as _;
    // Named `stty` as its argv[0], as Go starts it, so that its complaint
    // when stdin is not a terminal reads the same.
    std::process::Command::new("/bin/stty")
        .arg0("stty")
        .arg(setting)
        .status()
        .map(|_| ())
        .map_err(|e| {
            let what = if setting == "-echo" { "off" } else { "on" };
            std::io::Error::new(
                e.kind(),
                format!("failed turning {what} console echo for password entry:\n\t{e}"),
            )
        })
}

/// One line of stdin, without its `\n` (and a `\r` before it); the end of
/// input ends the line. Longest line taken: 64 KiB, far above any password.
fn read_line() -> Result<String, std::io::Error> {
    const LINE_MAX: usize = 64 * 1024;
    let mut line = Vec::new();
    let mut stdin = std::io::stdin().lock();
    let mut byte = [0u8; 1];
    while line.len() < LINE_MAX {
        match stdin.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// `fmt.Scanf("%s", &password)`, as etcdctl reads a password with
/// `--interactive=false`: spaces skipped, then one word; a newline before
/// any word (or the end of input) gives an empty password, as Go's scan
/// fails then and etcdctl ignores the error.
pub fn scan_word() -> String {
    const WORD_MAX: usize = 64 * 1024;
    let mut word = Vec::new();
    let mut stdin = std::io::stdin().lock();
    let mut byte = [0u8; 1];
    while word.len() < WORD_MAX {
        match stdin.read(&mut byte) {
            Ok(1) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => break,
        }
        let b = byte[0];
        if b == b'\n' {
            break;
        }
        if b.is_ascii_whitespace() {
            if word.is_empty() {
                continue;
            }
            break;
        }
        word.push(b);
    }
    String::from_utf8_lossy(&word).into_owned()
}

/// Runs an `auth` subcommand.
pub async fn auth(ctx: &Context, command: &AuthCommand) -> Result<(), CtlError> {
    match command {
        AuthCommand::Enable { args } => {
            if !args.is_empty() {
                return Err(CtlError::bad_args(
                    "auth enable command does not accept any arguments",
                ));
            }
            auth_enable(ctx).await?;
            emit("Authentication Enabled\n")
        }
        AuthCommand::Disable { args } => {
            if !args.is_empty() {
                return Err(CtlError::bad_args(
                    "auth disable command does not accept any arguments",
                ));
            }
            let id = ctx.client.next_request_id();
            ctx.client
                .auth_disable(pb::AuthDisableRequest {}, id)
                .await?;
            emit("Authentication Disabled\n")
        }
        AuthCommand::Status { args } => {
            if !args.is_empty() {
                return Err(CtlError::bad_args(
                    "auth status command does not accept any arguments",
                ));
            }
            let r = ctx.client.auth_status(pb::AuthStatusRequest {}).await?;
            show(ctx, &r, || ctx.printer.auth_status(&r))
        }
    }
}

/// etcdctl's `auth enable`: when the root user lacks the root role, the
/// role is created and granted and enabling is tried again. Bounded: the
/// second refusal for that reason is the answer.
async fn auth_enable(ctx: &Context) -> Result<(), CtlError> {
    const ROOT_ROLE_MISSING: &str = "etcdserver: root user does not have root role";
    for attempt in 0..2 {
        let id = ctx.client.next_request_id();
        let err = match ctx.client.auth_enable(pb::AuthEnableRequest {}, id).await {
            Ok(_) => return Ok(()),
            Err(err) => err,
        };
        let missing = err
            .status()
            .is_some_and(|s| s.message() == ROOT_ROLE_MISSING);
        if !missing || attempt > 0 {
            return Err(err.into());
        }
        let id = ctx.client.next_request_id();
        ctx.client
            .role_add(
                pb::AuthRoleAddRequest {
                    name: "root".into(),
                },
                id,
            )
            .await?;
        let id = ctx.client.next_request_id();
        ctx.client
            .user_grant_role(
                pb::AuthUserGrantRoleRequest {
                    user: "root".into(),
                    role: "root".into(),
                },
                id,
            )
            .await?;
    }
    Ok(())
}

/// Runs a `user` subcommand; `prepared` holds the password read before
/// connecting.
pub async fn user(
    ctx: &Context,
    command: &UserCommand,
    prepared: &Prepared,
) -> Result<(), CtlError> {
    let client = &ctx.client;
    let printer = &ctx.printer;
    match command {
        UserCommand::Add(args) => {
            let Some((name, password)) = prepared.user_password.clone() else {
                return Err(CtlError::bad_args(
                    "user add command requires user name as its argument",
                ));
            };
            let req = pb::AuthUserAddRequest {
                name: name.clone(),
                password,
                options: Some(authpb::UserAddOptions {
                    no_password: args.no_password,
                }),
                ..Default::default()
            };
            let r = client.user_add(req, client.next_request_id()).await?;
            show(ctx, &r, || {
                printer.auth_change(format!("User {name} created\n"), &r.header)
            })
        }
        UserCommand::Delete { args } => {
            let [name] = args.as_slice() else {
                return Err(CtlError::bad_args(
                    "user delete command requires user name as its argument",
                ));
            };
            let req = pb::AuthUserDeleteRequest { name: name.clone() };
            let r = client.user_delete(req, client.next_request_id()).await?;
            show(ctx, &r, || {
                printer.auth_change(format!("User {name} deleted\n"), &r.header)
            })
        }
        UserCommand::Get(args) => user_get(ctx, args).await,
        UserCommand::List { args } => {
            if !args.is_empty() {
                return Err(CtlError::bad_args(
                    "user list command requires no arguments",
                ));
            }
            let r = client.user_list(pb::AuthUserListRequest {}).await?;
            show(ctx, &r, || printer.user_list(&r))
        }
        UserCommand::Passwd(_) => {
            let Some((name, password)) = prepared.user_password.clone() else {
                return Err(CtlError::bad_args(
                    "user passwd command requires user name as its argument",
                ));
            };
            let req = pb::AuthUserChangePasswordRequest {
                name,
                password,
                ..Default::default()
            };
            let r = client
                .user_change_password(req, client.next_request_id())
                .await?;
            show(ctx, &r, || {
                printer.auth_change("Password updated\n".into(), &r.header)
            })
        }
        UserCommand::GrantRole { args } => {
            let [user, role] = args.as_slice() else {
                return Err(CtlError::bad_args(
                    "user grant command requires user name and role name as its argument",
                ));
            };
            let req = pb::AuthUserGrantRoleRequest {
                user: user.clone(),
                role: role.clone(),
            };
            let r = client
                .user_grant_role(req, client.next_request_id())
                .await?;
            let sentence = format!("Role {role} is granted to user {user}\n");
            show(ctx, &r, || printer.auth_change(sentence, &r.header))
        }
        UserCommand::RevokeRole { args } => {
            let [user, role] = args.as_slice() else {
                return Err(CtlError::bad_args(
                    "user revoke-role requires user name and role name as its argument",
                ));
            };
            let req = pb::AuthUserRevokeRoleRequest {
                name: user.clone(),
                role: role.clone(),
            };
            let r = client
                .user_revoke_role(req, client.next_request_id())
                .await?;
            let sentence = format!("Role {role} is revoked from user {user}\n");
            show(ctx, &r, || printer.auth_change(sentence, &r.header))
        }
    }
}

/// `user get`; with `--detail`, the user's name and then each of its roles
/// as `role get` prints it (the name line is printed in every format, as
/// etcdctl does).
async fn user_get(ctx: &Context, args: &UserGetArgs) -> Result<(), CtlError> {
    let [name] = args.args.as_slice() else {
        return Err(CtlError::bad_args(
            "user get command requires user name as its argument",
        ));
    };
    let r = ctx
        .client
        .user_get(pb::AuthUserGetRequest { name: name.clone() })
        .await?;
    if !args.detail {
        return show(ctx, &r, || ctx.printer.user_get(name, &r));
    }
    emit(&format!("User: {name}\n"))?;
    for role in &r.roles {
        emit("\n")?;
        let perms = ctx
            .client
            .role_get(pb::AuthRoleGetRequest { role: role.clone() })
            .await?;
        show(ctx, &perms, || ctx.printer.role_get(role, &perms))?;
    }
    Ok(())
}

/// Runs a `role` subcommand.
pub async fn role(ctx: &Context, command: &RoleCommand) -> Result<(), CtlError> {
    let client = &ctx.client;
    let printer = &ctx.printer;
    match command {
        RoleCommand::Add { args } => {
            let [name] = args.as_slice() else {
                return Err(CtlError::bad_args(
                    "role add command requires role name as its argument",
                ));
            };
            let req = pb::AuthRoleAddRequest { name: name.clone() };
            let r = client.role_add(req, client.next_request_id()).await?;
            show(ctx, &r, || {
                printer.auth_change(format!("Role {name} created\n"), &r.header)
            })
        }
        RoleCommand::Delete { args } => {
            let [name] = args.as_slice() else {
                return Err(CtlError::bad_args(
                    "role delete command requires role name as its argument",
                ));
            };
            let req = pb::AuthRoleDeleteRequest { role: name.clone() };
            let r = client.role_delete(req, client.next_request_id()).await?;
            show(ctx, &r, || {
                printer.auth_change(format!("Role {name} deleted\n"), &r.header)
            })
        }
        RoleCommand::Get { args } => {
            let [name] = args.as_slice() else {
                return Err(CtlError::bad_args(
                    "role get command requires role name as its argument",
                ));
            };
            let r = client
                .role_get(pb::AuthRoleGetRequest { role: name.clone() })
                .await?;
            show(ctx, &r, || printer.role_get(name, &r))
        }
        RoleCommand::List { args } => {
            if !args.is_empty() {
                return Err(CtlError::bad_args(
                    "role list command requires no arguments",
                ));
            }
            let r = client.role_list(pb::AuthRoleListRequest {}).await?;
            show(ctx, &r, || printer.role_list(&r))
        }
        RoleCommand::GrantPermission(args) => grant_permission(ctx, args).await,
        RoleCommand::RevokePermission(args) => revoke_permission(ctx, args).await,
    }
}

async fn grant_permission(ctx: &Context, args: &PermissionArgs) -> Result<(), CtlError> {
    if args.args.len() < 3 {
        return Err(CtlError::bad_args(
            "role grant command requires role name, permission type, and key [endkey] as its argument",
        ));
    }
    let role = &args.args[0];
    let perm_type = permission_type(&args.args[1])?;
    let (key, range_end) = permission_range(&args.args[2..], args.prefix, args.from_key)?;
    let req = pb::AuthRoleGrantPermissionRequest {
        name: role.clone(),
        perm: Some(authpb::Permission {
            perm_type,
            key,
            range_end,
        }),
    };
    let client = &ctx.client;
    let r = client
        .role_grant_permission(req, client.next_request_id())
        .await?;
    show(ctx, &r, || {
        ctx.printer
            .auth_change(format!("Role {role} updated\n"), &r.header)
    })
}

async fn revoke_permission(ctx: &Context, args: &PermissionArgs) -> Result<(), CtlError> {
    if args.args.len() < 2 {
        return Err(CtlError::bad_args(
            "role revoke-permission command requires role name and key [endkey] as its argument",
        ));
    }
    let role = &args.args[0];
    let (key, range_end) = permission_range(&args.args[1..], args.prefix, args.from_key)?;
    let req = pb::AuthRoleRevokePermissionRequest {
        role: role.clone(),
        key: key.clone(),
        range_end: range_end.clone(),
    };
    let client = &ctx.client;
    let r = client
        .role_revoke_permission(req, client.next_request_id())
        .await?;
    // etcdctl names the key as typed (an empty key stays empty here,
    // though `\0` was sent) and the end as sent.
    let sentence =
        crate::output::simple::role_revoke_permission(role, args.args[1].as_bytes(), &range_end);
    show(ctx, &r, || ctx.printer.auth_change(sentence, &r.header))
}

/// clientv3's `StrToPermissionType`: `read`, `write`, `readwrite`, in any
/// case.
fn permission_type(text: &str) -> Result<i32, CtlError> {
    authpb::permission::Type::from_str_name(&text.to_ascii_uppercase())
        .map(|t| t as i32)
        .ok_or_else(|| CtlError::bad_args(format!("invalid permission type: {text}")))
}

/// The key range a permission covers, by etcdctl's rules: an empty key is
/// `\0` (every key, open ended with `--prefix` or `--from-key`); a key with
/// `--prefix` covers its prefix, with `--from-key` everything from it, and
/// with an end key `[key, end)`.
pub fn permission_range(
    args: &[String],
    prefix: bool,
    from_key: bool,
) -> Result<(Vec<u8>, Vec<u8>), CtlError> {
    const EXCLUSIVE: &str = "--from-key and --prefix flags are mutually exclusive";
    let key = args[0].as_bytes().to_vec();
    if key.is_empty() {
        if prefix && from_key {
            return Err(CtlError::bad_args(EXCLUSIVE));
        }
        let end = if prefix || from_key { vec![0] } else { vec![] };
        return Ok((vec![0], end));
    }
    let end = match (args.get(1), prefix, from_key) {
        (None, true, true) => return Err(CtlError::bad_args(EXCLUSIVE)),
        (None, true, false) => super::prefix_range_end(&key),
        (None, false, true) => vec![0],
        (None, false, false) => vec![],
        (Some(_), true, _) => {
            return Err(CtlError::bad_args(
                "unexpected endkey argument with --prefix flag",
            ))
        }
        (Some(_), false, true) => {
            return Err(CtlError::bad_args(
                "unexpected endkey argument with --from-key flag",
            ))
        }
        (Some(end), false, false) => end.as_bytes().to_vec(),
    };
    Ok((key, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn permission_ranges_follow_etcdctl() {
        let range =
            |args: &[&str], p, f| permission_range(&strings(args), p, f).map_err(|e| e.message);
        assert_eq!(range(&["a"], false, false), Ok((b"a".to_vec(), vec![])));
        assert_eq!(
            range(&["a"], true, false),
            Ok((b"a".to_vec(), b"b".to_vec()))
        );
        assert_eq!(range(&["a"], false, true), Ok((b"a".to_vec(), vec![0])));
        assert_eq!(
            range(&["a", "c"], false, false),
            Ok((b"a".to_vec(), b"c".to_vec()))
        );
        assert_eq!(range(&[""], true, false), Ok((vec![0], vec![0])));
        assert_eq!(range(&[""], false, false), Ok((vec![0], vec![])));
        assert_eq!(
            range(&["a"], true, true),
            Err("--from-key and --prefix flags are mutually exclusive".to_string())
        );
        assert_eq!(
            range(&["a", "b"], true, false),
            Err("unexpected endkey argument with --prefix flag".to_string())
        );
    }

    #[test]
    fn permission_types_are_case_insensitive() {
        assert_eq!(permission_type("readwrite").ok(), Some(2));
        assert_eq!(permission_type("Write").ok(), Some(1));
        assert_eq!(
            permission_type("admin").err().map(|e| e.message),
            Some("invalid permission type: admin".to_string())
        );
    }

    #[test]
    fn go_bools_parse_as_strconv_does() {
        assert_eq!(parse_go_bool("false"), Ok(false));
        assert_eq!(parse_go_bool("T"), Ok(true));
        assert!(parse_go_bool("yes").is_err());
    }
}
