-- A rich schema of the project's own, for the verdict-truth corpus: what real databases
-- have and pgbench does not. Runs with psql (as a superuser) on PostgreSQL 15 to 18;
-- features of newer majors are guarded by \if. Idempotent only on a fresh cluster.
\set ON_ERROR_STOP on
\encoding UTF8
SELECT current_setting('server_version_num')::int >= 160000 AS pg16,
       current_setting('server_version_num')::int >= 170000 AS pg17,
       current_setting('server_version_num')::int >= 180000 AS pg18,
       exists (select 1 from pg_collation where collname = 'und-x-icu') AS icu \gset

-- Roles: production's postgres has a password (the sandbox must keep its own superuser)
ALTER ROLE postgres PASSWORD 'production-secret';
CREATE ROLE app_owner LOGIN PASSWORD 'owner-secret';
CREATE ROLE app_reader NOLOGIN;
CREATE ROLE "Rôle Mixte" LOGIN CONNECTION LIMIT 5 VALID UNTIL '2031-01-01 00:00:00+00';
GRANT app_reader TO "Rôle Mixte" WITH ADMIN OPTION;
ALTER ROLE app_reader SET statement_timeout = '5s';

-- A database with owner, settings, ACL, comment and connection limit
CREATE DATABASE shop OWNER app_owner CONNECTION LIMIT 50;
ALTER DATABASE shop SET work_mem = '8MB';
ALTER DATABASE shop SET search_path = shop, public;
ALTER ROLE app_reader IN DATABASE shop SET work_mem = '16MB';
REVOKE CONNECT, TEMPORARY ON DATABASE shop FROM PUBLIC;
GRANT CONNECT ON DATABASE shop TO app_reader;
COMMENT ON DATABASE shop IS 'Boutique — données de test';

-- Databases in other encodings
CREATE DATABASE latin1db ENCODING 'LATIN1' LOCALE 'C' TEMPLATE template0;
CREATE DATABASE sqlascii ENCODING 'SQL_ASCII' LOCALE 'C' TEMPLATE template0;
CREATE DATABASE eucjp ENCODING 'EUC_JP' LOCALE 'C' TEMPLATE template0;
\if :icu
CREATE DATABASE icudb ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C' TEMPLATE template0;
\endif
\if :pg17
CREATE DATABASE builtindb ENCODING 'UTF8' LOCALE_PROVIDER builtin BUILTIN_LOCALE 'C.UTF-8' LOCALE 'C' TEMPLATE template0;
\endif

\connect shop
\set ON_ERROR_STOP on
\encoding UTF8
CREATE EXTENSION pg_trgm;
CREATE EXTENSION hstore;
CREATE SCHEMA shop AUTHORIZATION app_owner;
CREATE SCHEMA "Ünï Schema";
SET search_path = shop, public;

CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE address AS (street text, city text, zip varchar(10));
CREATE DOMAIN positive_money AS numeric(12, 2) CHECK (VALUE > 0);
CREATE TYPE floatrange AS RANGE (subtype = float8, subtype_diff = float8mi);

-- Partitioned by range with sub-partitions (by list) and default partitions; a primary key
-- makes partitioned indexes (relkind I, no storage)
CREATE TABLE orders (
    id bigint GENERATED ALWAYS AS IDENTITY,
    placed date NOT NULL,
    region text NOT NULL,
    amount positive_money NOT NULL,
    net numeric GENERATED ALWAYS AS (amount / 1.2) STORED,
    mood mood,
    ship_to address,
    attrs hstore,
    PRIMARY KEY (id, placed, region)
) PARTITION BY RANGE (placed);
CREATE TABLE orders_2025 PARTITION OF orders FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')
    PARTITION BY LIST (region);
CREATE TABLE orders_2025_eu PARTITION OF orders_2025 FOR VALUES IN ('eu');
CREATE TABLE orders_2025_us PARTITION OF orders_2025 FOR VALUES IN ('us');
CREATE TABLE orders_2025_rest PARTITION OF orders_2025 DEFAULT;
CREATE TABLE orders_2026 PARTITION OF orders FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE orders_other PARTITION OF orders DEFAULT;
CREATE INDEX orders_region ON orders (region, placed);
CREATE INDEX orders_attrs ON orders USING gin (attrs);
INSERT INTO orders (placed, region, amount, mood, ship_to, attrs)
SELECT date '2024-06-01' + (g % 900), (array['eu', 'us', 'apac'])[1 + g % 3], 1 + (g % 500),
       (array['sad', 'ok', 'happy'])[1 + g % 3]::mood,
       row('rue ' || g, 'Zürich', lpad((g % 10000)::text, 5, '0'))::address,
       hstore('k' || (g % 7), 'v' || g)
FROM generate_series(1, 20000) g;

-- Non-ASCII and quoted names, trigram index, TOAST (incompressible values), RLS
CREATE TABLE "Ünï Schema"."Commandes spéciales" (
    "Numéro" int PRIMARY KEY,
    "Prix €" numeric,
    "with ""quotes""" text,
    notes text
);
INSERT INTO "Ünï Schema"."Commandes spéciales"
SELECT g, g * 1.5, 'q"' || g, (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 200) i)
FROM generate_series(1, 300) g;
CREATE INDEX "trgm on notes" ON "Ünï Schema"."Commandes spéciales" USING gin (notes gin_trgm_ops);
CREATE TABLE customers (id int PRIMARY KEY, name text COLLATE "C", tenant text NOT NULL,
                        during floatrange, owner_name name DEFAULT current_user);
INSERT INTO customers SELECT g, 'customer ' || g, 't' || (g % 4), floatrange(g, g + 1.5)
FROM generate_series(1, 2000) g;
ALTER TABLE customers ENABLE ROW LEVEL SECURITY;
ALTER TABLE customers FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_only ON customers USING (tenant = current_setting('app.tenant', true));
\if :icu
CREATE COLLATION german_phonebook (provider = icu, locale = 'de-u-co-phonebk');
CREATE TABLE names_icu (n text COLLATE german_phonebook, n_und text COLLATE "und-x-icu");
INSERT INTO names_icu SELECT 'Müller ' || g, 'Ærø ' || g FROM generate_series(1, 500) g;
CREATE INDEX ON names_icu (n);
\endif
CREATE COLLATION posix_copy (provider = libc, locale = 'POSIX');
CREATE TABLE names_libc (n text COLLATE posix_copy);
INSERT INTO names_libc SELECT 'name ' || g FROM generate_series(1, 500) g;
CREATE INDEX ON names_libc (n);

-- Unlogged table, matviews (one WITH NO DATA, indexed), a view, sequences, a trigger
CREATE UNLOGGED TABLE sessions (id int PRIMARY KEY, seen timestamptz DEFAULT now());
INSERT INTO sessions SELECT g FROM generate_series(1, 1000) g;
CREATE MATERIALIZED VIEW region_totals AS
    SELECT region, count(*) AS n, sum(amount) AS total FROM orders GROUP BY region;
CREATE UNIQUE INDEX ON region_totals (region);
CREATE MATERIALIZED VIEW pending_report AS SELECT id, placed FROM orders WITH NO DATA;
CREATE INDEX ON pending_report (placed);
CREATE VIEW happy_orders AS SELECT * FROM orders WHERE mood = 'happy';
CREATE SEQUENCE invoice_no START 1000 INCREMENT 7;
SELECT nextval('invoice_no') FROM generate_series(1, 10);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN NEW.seen := now(); RETURN NEW; END $$;
CREATE TRIGGER sessions_touch BEFORE UPDATE ON sessions FOR EACH ROW EXECUTE FUNCTION touch();
\if :pg18
CREATE TABLE measures (id int PRIMARY KEY, c numeric, f numeric GENERATED ALWAYS AS (c * 9 / 5 + 32) VIRTUAL);
INSERT INTO measures (id, c) SELECT g, g / 10.0 FROM generate_series(1, 1000) g;
\endif
-- A foreign table (never read by a restore test: a sandbox reaches nothing)
CREATE EXTENSION file_fdw;
CREATE SERVER elsewhere FOREIGN DATA WRAPPER file_fdw;
CREATE FOREIGN TABLE remote_orders (id int, note text) SERVER elsewhere
    OPTIONS (filename '/nonexistent/pgproof/orders.csv', format 'csv');

-- Large objects with comments and an owner
SELECT lo_from_bytea(0, convert_to(repeat('large object ' || g || ' ', 500 * g), 'UTF8'))
FROM generate_series(1, 5) g;
DO $$
DECLARE o oid;
BEGIN
  FOR o IN SELECT oid FROM pg_largeobject_metadata ORDER BY oid LIMIT 2 LOOP
    EXECUTE format('COMMENT ON LARGE OBJECT %s IS %L', o, 'objet n° ' || o);
    EXECUTE format('ALTER LARGE OBJECT %s OWNER TO app_owner', o);
  END LOOP;
END $$;
ALTER TABLE orders OWNER TO app_owner;
GRANT SELECT ON ALL TABLES IN SCHEMA shop TO app_reader;
ANALYZE;

\connect latin1db
\set ON_ERROR_STOP on
\encoding UTF8
CREATE TABLE "café" (id int PRIMARY KEY, "crème" text);
INSERT INTO "café" SELECT g, 'brûlée ' || g || ' ½' FROM generate_series(1, 1000) g;
COMMENT ON DATABASE latin1db IS 'Latin-1: déjà vu';

\connect sqlascii
\set ON_ERROR_STOP on
\encoding UTF8
-- bytes that are not UTF-8 (0xE9 alone), in a table name and in the data
DO $$ BEGIN
  EXECUTE 'CREATE TABLE ' || quote_ident(convert_from('\x636166e9', 'SQL_ASCII')) || ' (id int PRIMARY KEY, v text)';
  EXECUTE 'INSERT INTO ' || quote_ident(convert_from('\x636166e9', 'SQL_ASCII'))
       || ' SELECT g, convert_from(''\x6361666520e9'', ''SQL_ASCII'') || g FROM generate_series(1, 500) g';
END $$;
CREATE TABLE plain (id int PRIMARY KEY, v text);
INSERT INTO plain SELECT g, 'plain ' || g FROM generate_series(1, 500) g;

\connect eucjp
\set ON_ERROR_STOP on
\encoding UTF8
CREATE TABLE "注文" (id int PRIMARY KEY, "品名" text);
INSERT INTO "注文" SELECT g, '商品' || g FROM generate_series(1, 800) g;
CREATE INDEX ON "注文" ("品名");
