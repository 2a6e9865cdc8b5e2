//! The encoded descriptor set (for gRPC reflection) describes every file, service and
//! method, under etcd's names.

use prost::Message;
use prost_types::FileDescriptorSet;
use raftkv_proto::FILE_DESCRIPTOR_SET;

fn methods(fds: &FileDescriptorSet, package: &str, service: &str) -> Vec<String> {
    let file = fds
        .file
        .iter()
        .find(|f| f.package() == package)
        .unwrap_or_else(|| panic!("no file for package {package}"));
    let svc = file
        .service
        .iter()
        .find(|s| s.name() == service)
        .unwrap_or_else(|| panic!("no service {package}.{service}"));
    svc.method.iter().map(|m| m.name().to_owned()).collect()
}

#[test]
fn descriptor_set_lists_every_service_and_method() {
    let fds = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
    let mut packages: Vec<&str> = fds.file.iter().map(|f| f.package()).collect();
    packages.sort_unstable();
    assert_eq!(
        packages,
        [
            "authpb",
            "etcdserverpb",
            "mvccpb",
            "v3electionpb",
            "v3lockpb"
        ]
    );

    let expected: &[(&str, &str, &[&str])] = &[
        (
            "etcdserverpb",
            "KV",
            &[
                "Range",
                "RangeStream",
                "Put",
                "DeleteRange",
                "Txn",
                "Compact",
            ],
        ),
        ("etcdserverpb", "Watch", &["Watch"]),
        (
            "etcdserverpb",
            "Lease",
            &[
                "LeaseGrant",
                "LeaseRevoke",
                "LeaseKeepAlive",
                "LeaseTimeToLive",
                "LeaseLeases",
            ],
        ),
        (
            "etcdserverpb",
            "Cluster",
            &[
                "MemberAdd",
                "MemberRemove",
                "MemberUpdate",
                "MemberList",
                "MemberPromote",
            ],
        ),
        (
            "etcdserverpb",
            "Maintenance",
            &[
                "Alarm",
                "Status",
                "Defragment",
                "Hash",
                "HashKV",
                "Snapshot",
                "MoveLeader",
                "Downgrade",
            ],
        ),
        (
            "etcdserverpb",
            "Auth",
            &[
                "AuthEnable",
                "AuthDisable",
                "AuthStatus",
                "Authenticate",
                "UserAdd",
                "UserGet",
                "UserList",
                "UserDelete",
                "UserChangePassword",
                "UserGrantRole",
                "UserRevokeRole",
                "RoleAdd",
                "RoleGet",
                "RoleList",
                "RoleDelete",
                "RoleGrantPermission",
                "RoleRevokePermission",
            ],
        ),
        ("v3lockpb", "Lock", &["Lock", "Unlock"]),
        (
            "v3electionpb",
            "Election",
            &["Campaign", "Proclaim", "Leader", "Observe", "Resign"],
        ),
    ];
    for (package, service, want) in expected {
        assert_eq!(
            methods(&fds, package, service),
            *want,
            "{package}.{service}"
        );
    }
    let services: usize = fds.file.iter().map(|f| f.service.len()).sum();
    assert_eq!(services, expected.len(), "no unexpected service");
}

#[test]
fn streaming_shapes_match_etcd() {
    let fds = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
    let mut shapes = Vec::new();
    for file in &fds.file {
        for svc in &file.service {
            for m in &svc.method {
                if m.client_streaming() || m.server_streaming() {
                    shapes.push(format!(
                        "{}.{}/{} client={} server={}",
                        file.package(),
                        svc.name(),
                        m.name(),
                        m.client_streaming(),
                        m.server_streaming()
                    ));
                }
            }
        }
    }
    shapes.sort();
    assert_eq!(
        shapes,
        [
            "etcdserverpb.KV/RangeStream client=false server=true",
            "etcdserverpb.Lease/LeaseKeepAlive client=true server=true",
            "etcdserverpb.Maintenance/Snapshot client=false server=true",
            "etcdserverpb.Watch/Watch client=true server=true",
            "v3electionpb.Election/Observe client=false server=true",
        ]
    );
}
