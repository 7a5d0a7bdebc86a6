"""A gallery in PostgreSQL shared by two ``facegnet serve`` processes, on a real PostgreSQL server (Debian's,
started in a temporary folder by :mod:`pg_server`).

Two servers on one database: a person enrolled (or renamed) through one is named through the other within a
second, a deletion reaches the other's FAISS index within a second, an identify-only token is refused enrolment
(403) and a revoked token is refused by both within a second, and ``kill -9`` of a server in the middle of an
enrolment loses no committed photo and leaves no half-enrolled one. A cluster job started through one server is
read, named, merged and dismissed through the other; ``facegnet cluster`` saves one there too. ``facegnet gallery
migrate`` copies a gallery (and its cluster jobs) into PostgreSQL and back, verified; the embedding-procedure check
holds as for SQLite. ``add_embeddings`` sends a batch in one COPY, in one announced transaction.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import ROOT, lfw_photo
from pg_server import LocalPostgres, find_bin_dir, free_port
from servers import start_server, stop_servers, wait_healthy

pytest.importorskip("psycopg", reason="the postgres extra is not installed: pip install 'facegnet[postgres]'")
pytest.importorskip("fastapi", reason="the server extra is not installed: pip install 'facegnet[server]'")
httpx = pytest.importorskip("httpx", reason="httpx is in the test extra: pip install -e '.[test]'")

pytestmark = pytest.mark.slow
TOKEN = "postgres-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def env() -> dict[str, str]:
    # Read when a process starts, not at import: the session's private export cache (conftest) is set by then.
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="session")
def postgres():
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (/usr/lib/postgresql/*/bin): apt-get install postgresql")
    server = LocalPostgres(bin_dir).start()
    try:
        yield server
    finally:
        server.stop()


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facegnet", *args], env=env(), capture_output=True, text=True,
                          timeout=timeout)


def start_database_server(url: str) -> tuple[subprocess.Popen, str]:
    return start_server("--database", url, "--token", TOKEN, "--workers", "1", "--threads", "1")


@pytest.fixture(scope="module")
def servers(postgres):
    """Two servers (A, B) on one PostgreSQL gallery: ({key: (process, url)}, database URL)."""
    url = postgres.create_database("shared")
    started = {key: start_database_server(url) for key in ("A", "B")}
    try:
        deadline = time.monotonic() + 240
        for process, address in started.values():
            wait_healthy(process, address, deadline)
        yield started, url
    finally:
        stop_servers(process for process, _ in started.values())


def photo_file(person: str, number: int) -> tuple:
    return ("file", (f"{person}_{number}.jpg", lfw_photo(person, number).read_bytes(), "image/jpeg"))


def enroll(url: str, person: str, numbers, headers=AUTH) -> httpx.Response:
    return httpx.post(f"{url}/api/people/{person}/photos", files=[photo_file(person, n) for n in numbers],
                      headers=headers, timeout=180)


def identify(url: str, person: str, number: int, headers=AUTH) -> httpx.Response:
    return httpx.post(f"{url}/api/identify", files=[photo_file(person, number)], headers=headers, timeout=120)


def listed(url: str) -> dict[str, int]:
    people = httpx.get(f"{url}/api/people", headers=AUTH, timeout=30).json()["people"]
    return {p["name"]: p["templates"] for p in people}


def until(check, seconds: float = 1.0) -> float:
    """Seconds until ``check()`` holds; fails when it still does not after ``seconds``."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, f"not within {seconds} s"
        time.sleep(0.02)
    return time.monotonic() - start


def test_enrolled_through_one_named_through_the_other(servers):
    started, _ = servers
    a, b = started["A"][1], started["B"][1]
    for person in ("Colin_Powell", "Tony_Blair"):
        answer = enroll(a, person, (1, 2))
        assert answer.status_code == 201, answer.text
        until(lambda: person in listed(b))  # B's reading of the database
        named = identify(b, person, 3).json()  # B's own FAISS index, which followed A's enrolment
        assert named["faces"][0]["name"] == person, named
    # Thumbnails come from the database, not from A's disk.
    template = httpx.get(f"{b}/api/people/Tony_Blair", headers=AUTH).json()["templates"][0]["id"]
    jpeg = httpx.get(f"{b}/api/people/Tony_Blair/templates/{template}/thumbnail", headers=AUTH)
    assert jpeg.status_code == 200 and jpeg.content[:2] == b"\xff\xd8"
    # A rename through B names the person so through A at once (names are read at search time).
    assert httpx.patch(f"{b}/api/people/Tony_Blair", json={"name": "Tony Blair"}, headers=AUTH).status_code == 200
    until(lambda: "Tony Blair" in listed(a))
    assert identify(a, "Tony_Blair", 3).json()["faces"][0]["name"] == "Tony Blair"


def test_deletion_reaches_the_other_within_a_second(servers):
    started, _ = servers
    a, b = started["A"][1], started["B"][1]
    assert enroll(b, "Serena_Williams", (1, 2)).status_code == 201
    assert identify(a, "Serena_Williams", 3).json()["faces"][0]["name"] == "Serena_Williams"
    assert httpx.delete(f"{a}/api/people/Serena_Williams", headers=AUTH).status_code == 200
    until(lambda: "Serena_Williams" not in listed(b))
    time.sleep(0.1)  # B's index is told by NOTIFY, within milliseconds
    face = identify(b, "Serena_Williams", 3).json()["faces"][0]
    assert face["name"] != "Serena_Williams" and all(c["name"] != "Serena_Williams" for c in face["candidates"])


def test_identify_only_token_and_revocation(servers):
    started, url = servers
    a, b = started["A"][1], started["B"][1]
    made = cli("gallery", "token", "add", "door camera", "--role", "identify", "--database", url)
    assert made.returncode == 0, made.stderr
    camera = {"Authorization": f"Bearer {made.stdout.strip()}"}
    refused = enroll(b, "Gerhard_Schroeder", (1,), headers=camera)
    assert refused.status_code == 403 and "identify" in refused.json()["error"], refused.text
    assert httpx.delete(f"{a}/api/people/Colin_Powell", headers=camera).status_code == 403
    assert identify(a, "Colin_Powell", 4, headers=camera).json()["faces"][0]["name"] == "Colin_Powell"
    assert httpx.get(f"{b}/api/people", headers=camera).status_code == 200

    from facegnet.errors import GalleryError
    from facegnet.gallery.pg_tokens import TokenTable

    table = TokenTable(url)
    desk = {"Authorization": f"Bearer {table.add('front desk', 'enroll')}"}
    assert enroll(b, "Gerhard_Schroeder", (1,), headers=desk).status_code == 201
    assert [(t["name"], t["role"], t["revoked"]) for t in table.list()] == [
        ("door camera", "identify", None), ("front desk", "enroll", None)]
    assert made.stdout.strip() not in str(table.list())  # only its digest is stored

    assert cli("gallery", "token", "revoke", "door camera", "--database", url).returncode == 0
    for server in (a, b):
        until(lambda: httpx.get(f"{server}/api/people", headers=camera).status_code == 401)
    assert httpx.get(f"{a}/api/people", headers=desk).status_code == 200
    with pytest.raises(GalleryError, match="no live token named 'door camera'"):
        table.revoke("door camera")
    table.close()


def job_people(job: dict) -> dict[str, list[int]]:
    """Group ids of a cluster job by the LFW person of their faces (each group must hold one person only)."""
    by_person: dict[str, list[int]] = {}
    for group in job["groups"]:
        people = {job["faces"][i]["name"].rsplit("/", 1)[-1].rsplit("_", 1)[0] for i in group["faces"]}
        assert len(people) == 1, group
        by_person.setdefault(people.pop(), []).append(group["id"])
    return by_person


def test_cluster_job_started_on_one_server_is_named_through_the_other(servers):
    """A cluster job lives in the database: made through A, read, named, merged and dismissed through B and A."""
    import psycopg

    started, url = servers
    a, b = started["A"][1], started["B"][1]
    files = [photo_file(person, n) for person, numbers in
             (("Colin_Powell", (5, 6)), ("Ariel_Sharon", (1, 2, 3)), ("Hugo_Chavez", (1, 2))) for n in numbers]
    created = httpx.post(f"{a}/api/clusters", files=files, headers=AUTH, timeout=180)
    assert created.status_code == 201, created.text
    job = created.json()
    with psycopg.connect(url, autocommit=True) as conn:  # the job and its photos are rows, not A's files
        assert conn.execute("SELECT COUNT(*) FROM cluster_photos WHERE job_id = %s", (job["id"],)).fetchone()[0] == 7
    assert httpx.get(f"{b}/api/clusters", headers=AUTH).json()["jobs"][0]["id"] == job["id"]
    assert httpx.get(f"{b}/api/clusters/{job['id']}", headers=AUTH).json() == job
    thumb = httpx.get(f"{b}/api/clusters/{job['id']}/faces/6/thumbnail", headers=AUTH)
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
    groups = job_people(job)
    assert set(groups) == {"Colin_Powell", "Ariel_Sharon", "Hugo_Chavez"}
    known = {g["id"]: g["known"] for g in job["groups"]}
    assert {known[g] for g in groups["Colin_Powell"]} == {"Colin_Powell"}  # enrolled above: the page offers it
    assert {known[g] for g in groups["Ariel_Sharon"] + groups["Hugo_Chavez"]} == {None}

    sharon = groups["Ariel_Sharon"]
    if len(sharon) > 1:  # merged through A, seen merged through B
        assert httpx.post(f"{a}/api/clusters/{job['id']}/merge", json={"groups": sharon}, headers=AUTH).is_success
    named = httpx.post(f"{b}/api/clusters/{job['id']}/groups/{sharon[0]}/name", json={"name": "Ariel Sharon"},
                       headers=AUTH, timeout=180)
    assert named.status_code == 200 and len(named.json()["added"]) == 3, named.text
    assert identify(a, "Ariel_Sharon", 4).json()["faces"][0]["name"] == "Ariel Sharon"
    # Two changes at once through the two servers: each waits for the other's row lock, neither is lost.
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda pair: httpx.post(f"{pair[0]}/api/clusters/{job['id']}/groups/{pair[1]}/dismiss",
                                                        headers=AUTH, timeout=60),
                                [(a, groups["Hugo_Chavez"][0]), (b, groups["Colin_Powell"][0])]))
    assert all(answer.status_code == 200 for answer in answers)
    states = {g["id"]: g["state"] for g in httpx.get(f"{a}/api/clusters/{job['id']}", headers=AUTH).json()["groups"]}
    assert states[sharon[0]] == "named"
    assert states[groups["Hugo_Chavez"][0]] == states[groups["Colin_Powell"][0]] == "dismissed"
    assert httpx.delete(f"{b}/api/clusters/{job['id']}", headers=AUTH).status_code == 200
    assert httpx.get(f"{a}/api/clusters/{job['id']}", headers=AUTH).status_code == 404


def test_cluster_cli_saves_a_job_in_the_database(servers, tmp_path):
    """``facegnet cluster PHOTOS`` with FACEGNET_DATABASE: the groups become a job every server shows, each marked
    with the enrolled person it looks like."""
    started, url = servers
    a, b = started["A"][1], started["B"][1]
    folder = tmp_path / "unsorted"
    folder.mkdir()
    for person, numbers in (("Ariel_Sharon", (5, 6)), ("Hugo_Chavez", (3,))):
        for n in numbers:
            (folder / f"{person}_{n}.jpg").write_bytes(lfw_photo(person, n).read_bytes())
    out = subprocess.run([sys.executable, "-m", "facegnet", "cluster", str(folder)], check=False, capture_output=True,
                         text=True, env={**env(), "FACEGNET_DATABASE": url}, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "looks like Ariel Sharon: " in out.stdout  # named through B in the test before
    job_id = out.stderr.split("saved as cluster job ")[1].split()[0]
    job = httpx.get(f"{a}/api/clusters/{job_id}", headers=AUTH).json()
    groups = job_people(job)
    assert set(groups) == {"Ariel_Sharon", "Hugo_Chavez"} and job["photos"] == 3
    assert [job["groups"][g]["known"] for g in groups["Ariel_Sharon"]] == ["Ariel Sharon"]
    named = httpx.post(f"{b}/api/clusters/{job_id}/groups/{groups['Hugo_Chavez'][0]}/name",
                       json={"name": "Hugo Chavez"}, headers=AUTH, timeout=180)
    assert named.status_code == 200 and len(named.json()["added"]) == 1, named.text
    assert "Hugo Chavez" in listed(a)  # the job stays, for the migration test


def test_kill_mid_enrolment_loses_nothing_committed(servers):
    """Last of the server tests: it kills server A."""
    import psycopg

    started, url = servers
    (process, a), b = started["A"], started["B"][1]
    before = listed(b)
    with psycopg.connect(url, autocommit=True) as conn:
        count = lambda: conn.execute("SELECT COUNT(*) FROM templates").fetchone()[0]  # noqa: E731
        start = count()
        with subprocess.Popen([sys.executable, "-c", (
                "import httpx, sys\n"
                f"files = [('file', (f'{{n}}.jpg', open(p, 'rb').read(), 'image/jpeg')) for n, p in enumerate("
                f"{[str(lfw_photo('George_W_Bush', n)) for n in range(1, 9)]!r})]\n"
                f"httpx.post('{a}/api/people/George_W_Bush/photos', files=files, headers={AUTH!r}, timeout=300)\n")],
                env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as client:
            until(lambda: count() > start, seconds=120)  # the request is under way: some photos in, more to come
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            client.wait(60)
        committed = count() - start
        assert 1 <= committed < 8  # killed in the middle
        # Whole photos only: every template has its person, its photo and a full embedding.
        half = conn.execute(
            "SELECT COUNT(*) FROM templates t WHERE NOT EXISTS (SELECT 1 FROM photos p WHERE p.sha256 = t.sha256) "
            "OR length(t.embedding) <> 2048 OR t.landmarks IS NULL").fetchone()[0]
        assert half == 0
    after = listed(b)
    assert after["George_W_Bush"] == committed  # B sees every committed photo
    assert {k: v for k, v in after.items() if k != "George_W_Bush"} == before  # nothing else lost
    named = identify(b, "George_W_Bush", 10).json()["faces"][0]
    assert named["name"] == "George_W_Bush", named


def test_rebuild_from_the_photos_in_the_database(servers, recognizer):
    """Re-embedding needs no server's disk: the photos servers enrolled come from the database."""
    from facegnet.gallery import Gallery

    started, url = servers
    b = started["B"][1]
    with Gallery(database=url, recognizer=recognizer) as gallery:
        templates = len(gallery)
        report = gallery.rebuild(progress=False)
    assert report.reembedded == templates and not report.dropped
    assert identify(b, "Colin_Powell", 4).json()["faces"][0]["name"] == "Colin_Powell"  # B follows the new epoch


def test_migration_both_ways(servers, postgres, tmp_path):
    """The servers' gallery out into a directory and from there into another database: the same people, templates
    and embeddings (bit for bit) everywhere, photos and cluster jobs included, and each copy names every template's
    own person."""
    import psycopg

    from facegnet.card import sha256_file
    from facegnet.gallery import Gallery
    from facegnet.gallery.migrate import open_location

    _, url = servers
    out = cli("gallery", "migrate", "--database", url, "--to", str(tmp_path / "copy"))
    assert out.returncode == 0, out.stderr
    assert "verified: counts and every embedding match" in out.stdout
    url2 = postgres.create_database("migrated")
    back = cli("gallery", "migrate", "--gallery", str(tmp_path / "copy"), "--to", url2)
    assert back.returncode == 0, back.stderr

    stores = [open_location(where) for where in (url, tmp_path / "copy", url2)]
    try:
        (ids, vectors), *others = [store.embeddings() for store in stores]
        assert len(ids) >= 6  # Colin_Powell 2, Tony_Blair 2, Gerhard_Schroeder 1, George_W_Bush 1 or more
        for ids_other, vectors_other in others:
            assert np.array_equal(ids, ids_other) and vectors.tobytes() == vectors_other.tobytes()
        names = stores[0].names_of(ids)
        assert stores[1].names_of(ids) == names == stores[2].names_of(ids)
        assert [p.name for p in stores[1].people()] == [p.name for p in stores[0].people()]
        for template in stores[1].templates():  # photos came out of the database beside the copy
            assert template.source.startswith(str(tmp_path / "copy" / "photos"))
            assert sha256_file(template.source) == template.sha256
        photos = [store.conn.execute("SELECT COUNT(*) FROM photos").fetchone()[0] for store in (stores[0], stores[2])]
        assert photos[1] == len(ids) and photos[0] >= photos[1]  # and back into the second database
    finally:
        for store in stores:
            store.close()
    # The cluster jobs waiting to be named (with their photos) travel too, out into copy/clusters/ and back.
    from facegnet.gallery.cluster_jobs import DatabaseJobs, FolderJobs

    jobs = [DatabaseJobs(url), FolderJobs(tmp_path / "copy"), DatabaseJobs(url2)]
    [listed_job] = jobs[0].list()
    assert "and 1 cluster jobs" in out.stdout and [store.list() for store in jobs[1:]] == [[listed_job]] * 2
    job = jobs[0].get(listed_job["id"])
    assert jobs[2].get(job["id"]) == job and jobs[1].photo(job["id"], job["faces"][0]["photo"]) == \
        jobs[2].photo(job["id"], job["faces"][0]["photo"]) == jobs[0].photo(job["id"], job["faces"][0]["photo"])
    for store in jobs:
        store.close()
    for where in ({"path": tmp_path / "copy"}, {"database": url2}):
        with Gallery(**where) as copy:
            found = copy.search(vectors)
            assert [m.name for m in found] == [names[i] for i in ids.tolist()]
            assert copy.verify_consistency()["consistent"]

    from facegnet.errors import GalleryError
    from facegnet.gallery.migrate import migrate

    with pytest.raises(GalleryError, match="migrate into an empty one"):
        migrate(tmp_path / "copy", url2)

    # The embedding-procedure rule holds as for SQLite: a gallery made another way is refused.
    with psycopg.connect(url2, autocommit=True) as conn:  # as if made with the flip off
        conn.execute("UPDATE meta SET value = replace(value, ':flip:', ':noflip:') WHERE key = 'procedure'")
    with pytest.raises(GalleryError, match="another embedding procedure.*--database"):
        Gallery(database=url2)


def test_stopped_by_sigterm_leaves_no_copies_of_photos(postgres, tmp_path):
    """A service manager stops a server with SIGTERM: it ends with exit 0, and its private folder of photo copies
    (made in TMPDIR) goes with it, as after Ctrl-C."""
    url = postgres.create_database("stopped")
    process, address = start_server("--database", url, "--token", TOKEN, "--workers", "1", "--threads", "1",
                                     env={"TMPDIR": str(tmp_path)})
    try:
        wait_healthy(process, address, time.monotonic() + 240)
        assert enroll(address, "Colin_Powell", [1]).status_code == 201
        folders = list(tmp_path.glob("facegnet-serve-*"))
        assert len(folders) == 1 and any(f.is_file() for f in folders[0].rglob("*"))  # copies while it runs
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(30) == 0, process.stderr.read().decode()
    finally:
        stop_servers([process])
    assert not list(tmp_path.glob("facegnet-serve-*"))


def test_missing_or_unreachable_database_is_one_line(postgres, tmp_path, capsys):
    url = postgres.create_database("empty")
    missing = cli("gallery", "list", "--database", url)
    assert missing.returncode == 5 and missing.stderr.count("\n") == 1 and "no gallery" in missing.stderr
    from facegnet.cli import main
    from facegnet.errors import GalleryError
    from facegnet.gallery import Gallery

    with pytest.raises(GalleryError, match="cannot connect to the database"):
        Gallery(database=f"postgresql://postgres:secret@127.0.0.1:{free_port()}/none")
    try:
        Gallery(database=f"postgresql://postgres:secret@127.0.0.1:{free_port()}/none")
    except GalleryError as exc:
        assert "secret" not in str(exc)  # a password never reaches a message
    assert main(["gallery", "list", "--database", "mysql://somewhere/db"]) == 5
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(lfw_photo("Colin_Powell", 1).read_bytes())
    assert main(["cluster", str(folder), "--database", "mysql://somewhere/db"]) == 5  # before any model loads
    assert "--database wants a PostgreSQL URL" in capsys.readouterr().err


def test_bulk_insert_is_one_announced_transaction(postgres):
    """``add_embeddings`` sends a batch to PostgreSQL in one COPY: ids in order, people made as one at a time would
    make them, the change announced to every other process; a batch that fails leaves nothing, and ``kill -9`` in
    the middle of a large one leaves the gallery as it was."""
    import psycopg

    from facegnet.gallery import Gallery
    from facegnet.gallery.pg_store import ChangeListener

    url = postgres.create_database("bulk")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3000, 512)).astype(np.float32)
    names = [f"p{i // 3}" for i in range(3000)]
    names[5] = "Ann"  # someone already enrolled gets more templates
    announced: list[int] = []
    listener = ChangeListener(url, announced.append)
    listener.start()
    try:
        with Gallery(database=url, create=True) as gallery:
            assert listener.ready.wait(10)
            first = gallery.add_embedding("Ann", vectors[0])
            ids = gallery.add_embeddings(names, vectors, sha256s=[f"{i:064x}" for i in range(3000)])
            assert ids == list(range(first + 1, first + 3001))
            generation = gallery.store.generation()
            until(lambda: announced and announced[-1] == generation)  # NOTIFY went out with the commit
            assert gallery.store.names_of(ids) == dict(zip(ids, names))
            stored = gallery.store.embeddings(ids[:20])[1]
            assert np.allclose(stored, vectors[:20] / np.linalg.norm(vectors[:20], axis=1, keepdims=True), atol=1e-6)
            assert [m.name for m in gallery.search(vectors[:40])] == names[:40]
            def order() -> list[str]:
                return [r[0] for r in gallery.store.conn.execute("SELECT name FROM people ORDER BY id")]

            assert order() == ["Ann"] + [f"p{i}" for i in range(1000)]

            # One photo's hash already stored, at the end of a batch: the whole batch is refused, nothing kept.
            with pytest.raises(psycopg.errors.UniqueViolation):
                gallery.add_embeddings(["q1", "q2"], vectors[:2], sha256s=[f"{9999:064x}", f"{7:064x}"])
            assert len(gallery) == 3001 and order()[-1] == "p999" and gallery.store.generation() == generation
    finally:
        listener.stop()

    with psycopg.connect(url, autocommit=True) as conn:
        def active() -> int:
            return conn.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE state = 'active' "
                                "AND query LIKE 'COPY templates%'").fetchone()[0]

        with subprocess.Popen([sys.executable, "-c", (
                "import numpy as np\nfrom facegnet.gallery import Gallery\n"
                f"with Gallery(database={url!r}) as g:\n"
                "    v = np.random.default_rng(1).standard_normal((60000, 512)).astype(np.float32)\n"
                "    g.add_embeddings([f'k{i}' for i in range(60000)], v)\n")],
                env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True) as writer:
            until(lambda: active() > 0 or writer.poll() is not None, seconds=120)
            assert writer.poll() is None, writer.stderr.read().decode()  # killed while the rows stream in
            os.killpg(writer.pid, signal.SIGKILL)
            writer.wait(10)
        assert conn.execute("SELECT COUNT(*) FROM templates").fetchone()[0] == 3001
        assert conn.execute("SELECT COUNT(*) FROM people WHERE name LIKE 'k%'").fetchone()[0] == 0
        assert int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]) == generation
    with Gallery(database=url) as gallery:  # the killed writer's lock went with its connection
        assert gallery.add_embeddings(["Bea"], vectors[:1])[0] > ids[-1] and len(gallery) == 3002
