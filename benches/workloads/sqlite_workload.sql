-- SQLite workload for Strata's real-program tests and benchmarks.
--
-- Run as `sqlite3 < sqlite_workload.sql` (an in-memory database, so the page
-- cache and every sort live in malloc'd memory). A recursive CTE generates
-- 300,000 rows; the queries then group, sort, join, update and delete them.
-- Every query has a total ORDER BY, so the output is deterministic.

.bail on
.headers off
.mode list

PRAGMA cache_size = -200000;

CREATE TABLE item (
    id INTEGER PRIMARY KEY,
    grp INTEGER NOT NULL,
    name TEXT NOT NULL,
    price REAL NOT NULL,
    note TEXT
);

WITH RECURSIVE seq(x) AS (
    SELECT 1
    UNION ALL
    SELECT x + 1 FROM seq WHERE x < 300000
)
INSERT INTO item (id, grp, name, price, note)
SELECT x,
       x % 97,
       printf('item-%06d', (x * 7919) % 300007),
       ((x * 37) % 10000) / 100.0,
       CASE WHEN x % 5 = 0 THEN substr(hex(x * 2654435761), 1, 1 + x % 24) END
FROM seq;

CREATE TABLE grp_info (grp INTEGER PRIMARY KEY, label TEXT NOT NULL);
WITH RECURSIVE g(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM g WHERE x < 96)
INSERT INTO grp_info SELECT x, printf('group-%02d', x) FROM g;

CREATE INDEX item_grp_name ON item (grp, name);
CREATE INDEX item_price ON item (price);

SELECT 'rows', count(*), count(note), sum(length(note)) FROM item;
SELECT grp, count(*), printf('%.2f', sum(price)), min(name), max(name)
FROM item GROUP BY grp ORDER BY grp LIMIT 12;
SELECT 'distinct names', count(DISTINCT name) FROM item;
SELECT name, price FROM item ORDER BY name DESC, id LIMIT 5;
SELECT g.label, count(*), printf('%.2f', avg(i.price))
FROM item AS i JOIN grp_info AS g ON g.grp = i.grp
WHERE i.price > 50 GROUP BY g.label ORDER BY 2 DESC, 1 LIMIT 8;
SELECT note, count(*) FROM item WHERE note IS NOT NULL
GROUP BY note ORDER BY count(*) DESC, note LIMIT 5;

UPDATE item SET price = price * 2, note = coalesce(note, '') || '!' WHERE id % 3 = 0;
DELETE FROM item WHERE grp IN (5, 17, 42);

SELECT 'after', count(*), printf('%.2f', total(price)), sum(length(note)) FROM item;
SELECT group_concat(name, ',') FROM (SELECT name FROM item ORDER BY price DESC, id LIMIT 10);
SELECT 'integrity', * FROM pragma_integrity_check;
