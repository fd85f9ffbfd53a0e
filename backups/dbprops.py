"""What a logical dump must bring back besides tables: each database's own properties and
the cluster's roles, read the same way from the source (at the dump's snapshot) and from a
restored sandbox, so the two can be compared field by field.

The queries are version-agnostic (``to_jsonb(pg_database)`` instead of naming columns that
moved between majors: ``daticulocale`` in 15/16, ``datlocale`` from 17) and read nothing a
non-superuser backup role cannot read; what it cannot read is recorded as unknown (None),
never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_DATABASE = """
select to_jsonb(d) - 'datfrozenxid' - 'datminmxid' - 'datlastsysoid',
       pg_encoding_to_char(d.encoding),
       pg_get_userbyid(d.datdba),
       (select coalesce(array_agg(a::text order by a::text), '{}')
          from unnest(coalesce(d.datacl, acldefault('d', d.datdba))) a),
       shobj_description(d.oid, 'pg_database'),
       (select coalesce(array_agg(s order by s), '{}') from (
          select coalesce(pg_get_userbyid(nullif(r.setrole, 0)) || ': ', '') || c as s
            from pg_db_role_setting r, unnest(r.setconfig) c
           where r.setdatabase = d.oid) q),
       (select count(*) from pg_largeobject_metadata),
       has_table_privilege('pg_catalog.pg_largeobject', 'select'),
       (select coalesce(array_agg(e.extname || ' ' || e.extversion order by e.extname), '{}')
          from pg_extension e)
from pg_database d where d.datname = current_database()
"""
# a separate statement: privileges are checked for every table a statement names, even in a
# branch that never runs, and a refusal would end the dump's snapshot transaction
_LARGE_OBJECT_BYTES = "select coalesce(sum(octet_length(data)), 0) from pg_largeobject"

_ROLES = """
select r.rolname,
       array_remove(array[
         case when r.rolsuper then 'superuser' end,
         case when not r.rolinherit then 'noinherit' end,
         case when r.rolcreaterole then 'createrole' end,
         case when r.rolcreatedb then 'createdb' end,
         case when r.rolcanlogin then 'login' end,
         case when r.rolreplication then 'replication' end,
         case when r.rolbypassrls then 'bypassrls' end,
         case when r.rolconnlimit <> -1 then 'connection limit ' || r.rolconnlimit end,
         case when r.rolvaliduntil is not null
              then 'valid until ' || (r.rolvaliduntil at time zone 'UTC')::text end
       ], null),
       (select coalesce(array_agg(distinct pg_get_userbyid(m.roleid)
                                  || case when m.admin_option then ' (admin)' else '' end), '{}')
          from pg_auth_members m where m.member = r.oid),
       (select coalesce(array_agg(c order by c), '{}')
          from pg_db_role_setting s, unnest(s.setconfig) c
         where s.setrole = r.oid and s.setdatabase = 0)
from pg_roles r
where r.rolname !~ '^pg_' and r.rolname <> all(%s)
order by 1
"""

_RULES_KEY = "daticurules"  # PostgreSQL 16+


@dataclass(frozen=True)
class DatabaseProperties:
    """A database as ``CREATE DATABASE`` / ``ALTER DATABASE`` / ``GRANT`` / ``COMMENT`` make it,
    and its large objects (which live outside any table)."""

    encoding: str
    collate: str
    ctype: str
    locale_provider: str  # c (libc), i (ICU), b (builtin); "c" before PostgreSQL 15
    locale: str | None  # ICU or builtin locale
    icu_rules: str | None
    owner: str
    connection_limit: int
    acl: tuple[str, ...]  # aclitems, defaults made explicit, sorted
    comment: str | None
    settings: tuple[str, ...]  # "name=value" and "role: name=value", sorted
    large_objects: int
    large_object_bytes: int | None  # None: pg_largeobject not readable by the backup role
    extensions: tuple[str, ...]  # "name version"

    def differences(self, other: DatabaseProperties) -> list[str]:
        """What ``other`` (the restored copy) has differently from ``self`` (the source)."""
        found = []
        for name in (
            "encoding",
            "collate",
            "ctype",
            "locale_provider",
            "locale",
            "icu_rules",
            "owner",
            "connection_limit",
            "acl",
            "comment",
            "settings",
            "large_objects",
            "large_object_bytes",
        ):
            want, got = getattr(self, name), getattr(other, name)
            if name == "large_object_bytes" and (want is None or got is None):
                continue
            if want != got:
                found.append(f"{name}: {_show(got)}, the source had {_show(want)}")
        return found

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DatabaseProperties:
        raw = dict(raw)
        for key in ("acl", "settings", "extensions"):
            raw[key] = tuple(raw.get(key) or ())
        return cls(**raw)


@dataclass(frozen=True)
class RoleInfo:
    name: str
    attributes: tuple[str, ...]
    member_of: tuple[str, ...]
    settings: tuple[str, ...]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RoleInfo:
        return cls(
            str(raw["name"]),
            tuple(raw.get("attributes") or ()),
            tuple(raw.get("member_of") or ()),
            tuple(raw.get("settings") or ()),
        )


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(value) + "]" if value else "[]"
    return repr(value)


def read_properties(conn: Any) -> DatabaseProperties:
    """The current database's properties (works inside the dump's snapshot transaction)."""
    row = conn.execute(_DATABASE).fetchone()
    if row is None:
        raise LookupError("the current database is not in pg_database")
    cols: dict[str, Any] = row[0]
    provider = str(cols.get("datlocprovider") or "c")
    locale = cols.get("datlocale", cols.get("daticulocale"))
    lo_bytes = None
    if row[7]:
        found = conn.execute(_LARGE_OBJECT_BYTES).fetchone()
        lo_bytes = int(found[0]) if found else None
    return DatabaseProperties(
        encoding=str(row[1]),
        collate=str(cols.get("datcollate") or ""),
        ctype=str(cols.get("datctype") or ""),
        locale_provider=provider,
        locale=str(locale) if locale is not None else None,
        icu_rules=cols.get(_RULES_KEY),
        owner=str(row[2]),
        connection_limit=int(cols.get("datconnlimit", -1)),
        acl=tuple(str(a) for a in row[3]),
        comment=row[4],
        settings=tuple(str(s) for s in row[5]),
        large_objects=int(row[6]),
        large_object_bytes=lo_bytes,
        extensions=tuple(str(e) for e in row[8]),
    )


def read_roles(conn: Any, exclude: tuple[str, ...] = ()) -> tuple[RoleInfo, ...]:
    """Every role but PostgreSQL's predefined ``pg_*`` ones (and ``exclude``)."""
    rows = conn.execute(_ROLES, (list(exclude),)).fetchall()
    return tuple(
        RoleInfo(
            str(r[0]),
            tuple(sorted(str(a) for a in r[1])),
            tuple(sorted(str(m) for m in r[2])),
            tuple(str(s) for s in r[3]),
        )
        for r in rows
    )


def role_differences(source: tuple[RoleInfo, ...], restored: tuple[RoleInfo, ...]) -> list[str]:
    """Roles missing from the restored cluster or restored with other attributes,
    memberships or settings."""
    have = {r.name: r for r in restored}
    found = []
    for role in source:
        got = have.get(role.name)
        if got is None:
            found.append(f"role {role.name} is missing")
            continue
        for label, want, value in (
            ("attributes", role.attributes, got.attributes),
            ("member of", role.member_of, got.member_of),
            ("settings", role.settings, got.settings),
        ):
            if want != value:
                found.append(
                    f"role {role.name}: {label} {_show(value)}, the source had {_show(want)}"
                )
    return found
