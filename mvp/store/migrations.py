"""Every migration of feedback.db, in order (applied by ``schema.migrate``; see schema.py's notes).

Never edit a released migration: append a new one at the end, numbered one higher, with a name that
says what it adds. A migration that rebuilds a table must follow SQLite's 12-step ALTER procedure.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


_SCORE = "INTEGER CHECK ({col} IS NULL OR (typeof({col}) = 'integer' AND {col} BETWEEN 1 AND 5))"


def _score(col: str) -> str:
    return f"{col} " + _SCORE.format(col=col)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "users, model_versions, conversations, messages, ratings, thumbs, comparisons",
        (
            """CREATE TABLE users (
                name TEXT PRIMARY KEY,
                role TEXT NOT NULL CHECK (role IN ('clinician', 'admin', 'demo')),
                password_hash TEXT NOT NULL,
                disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )""",
            """CREATE TABLE model_versions (
                id INTEGER PRIMARY KEY,
                label TEXT NOT NULL,
                base_model TEXT NOT NULL,
                adapter TEXT,
                quantization TEXT NOT NULL,
                backend TEXT NOT NULL CHECK (backend IN ('inprocess', 'openai')),
                served_name TEXT,
                base_url TEXT,
                parent_id INTEGER REFERENCES model_versions(id),
                data_manifest TEXT,
                metrics TEXT,
                created_at TEXT NOT NULL
            )""",
            """CREATE UNIQUE INDEX model_versions_identity ON model_versions (
                base_model, COALESCE(adapter, ''), quantization, backend,
                COALESCE(served_name, ''), COALESCE(base_url, ''))""",
            """CREATE TABLE conversations (
                id INTEGER PRIMARY KEY,
                user_name TEXT NOT NULL REFERENCES users(name),
                stage_id TEXT NOT NULL,
                model_version_id INTEGER REFERENCES model_versions(id),
                is_demo INTEGER NOT NULL DEFAULT 0 CHECK (is_demo IN (0, 1)),
                case_id TEXT,
                title TEXT,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )""",
            "CREATE INDEX conversations_user ON conversations (user_name, updated_at)",
            "CREATE INDEX conversations_updated ON conversations (updated_at)",
            """CREATE TABLE messages (
                id INTEGER PRIMARY KEY,
                conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
                role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system-notice')),
                content TEXT NOT NULL,
                stage_id TEXT NOT NULL,
                model_version_id INTEGER REFERENCES model_versions(id),
                parent_id INTEGER REFERENCES messages(id),
                is_active INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
                status TEXT NOT NULL DEFAULT 'complete'
                    CHECK (status IN ('complete', 'interrupted', 'blocked')),
                gen_params TEXT,
                metrics TEXT,
                safety TEXT,
                created_at TEXT NOT NULL
            )""",
            "CREATE INDEX messages_conversation ON messages (conversation_id, id)",
            "CREATE INDEX messages_parent ON messages (parent_id)",
            """CREATE UNIQUE INDEX messages_one_active_reply ON messages (parent_id)
                WHERE role = 'assistant' AND is_active = 1""",
            f"""CREATE TABLE ratings (
                id INTEGER PRIMARY KEY,
                message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
                rater TEXT NOT NULL REFERENCES users(name),
                revision INTEGER NOT NULL CHECK (revision >= 1),
                is_latest INTEGER NOT NULL DEFAULT 1 CHECK (is_latest IN (0, 1)),
                {_score('overall')},
                {_score('empathy')},
                {_score('professionalism')},
                {_score('safety')},
                {_score('guidance')},
                tags TEXT NOT NULL DEFAULT '[]',
                comment TEXT,
                rewrite TEXT,
                created_at TEXT NOT NULL,
                UNIQUE (message_id, rater, revision)
            )""",
            "CREATE UNIQUE INDEX ratings_latest ON ratings (message_id, rater) WHERE is_latest = 1",
            "CREATE INDEX ratings_rater ON ratings (rater)",  # dropped again by migration 5
            "CREATE INDEX ratings_created ON ratings (created_at)",  # dropped again by migration 5
            """CREATE TABLE thumbs (
                message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
                rater TEXT NOT NULL REFERENCES users(name),
                value INTEGER NOT NULL CHECK (value IN (-1, 0, 1)),
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                PRIMARY KEY (message_id, rater)
            )""",
            """CREATE TABLE comparisons (
                id INTEGER PRIMARY KEY,
                message_a INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
                message_b INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
                shown_left INTEGER NOT NULL,
                choice TEXT NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'both_bad')),
                rater TEXT NOT NULL REFERENCES users(name),
                created_at TEXT NOT NULL,
                CHECK (message_a <> message_b),
                CHECK (shown_left IN (message_a, message_b))
            )""",
            "CREATE INDEX comparisons_a ON comparisons (message_a)",
            "CREATE INDEX comparisons_b ON comparisons (message_b)",
        ),
    ),
    Migration(
        2,
        "flags: safety review queue",
        (
            """CREATE TABLE flags (
                id INTEGER PRIMARY KEY,
                conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
                message_id INTEGER REFERENCES messages(id) ON DELETE CASCADE,
                category TEXT NOT NULL,
                evidence TEXT NOT NULL DEFAULT '[]',
                source TEXT NOT NULL CHECK (
                    source IN ('rules', 'model', 'output_screen', 'assessment', 'manual')),
                created_at TEXT NOT NULL,
                reviewed_by TEXT REFERENCES users(name),
                reviewed_at TEXT,
                note TEXT
            )""",
            "CREATE INDEX flags_open ON flags (reviewed_at, id)",
            "CREATE INDEX flags_conversation ON flags (conversation_id)",
            "CREATE INDEX flags_message ON flags (message_id)",
        ),
    ),
    Migration(
        3,
        "assessments: PHQ-9 / GAD-7 screenings and their items",
        (
            """CREATE TABLE assessments (
                id INTEGER PRIMARY KEY,
                conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
                instrument TEXT NOT NULL,
                status TEXT NOT NULL DEFAULT 'in_progress'
                    CHECK (status IN ('in_progress', 'finished', 'abandoned')),
                started_at TEXT NOT NULL,
                finished_at TEXT,
                total INTEGER,
                band TEXT
            )""",
            "CREATE INDEX assessments_conversation ON assessments (conversation_id)",
            """CREATE TABLE assessment_items (
                assessment_id INTEGER NOT NULL REFERENCES assessments(id) ON DELETE CASCADE,
                item_no INTEGER NOT NULL CHECK (item_no >= 1),
                question TEXT NOT NULL,
                answer TEXT NOT NULL,
                score INTEGER CHECK (score IS NULL OR score BETWEEN 0 AND 3),
                method TEXT NOT NULL,
                needs_review INTEGER NOT NULL DEFAULT 0 CHECK (needs_review IN (0, 1)),
                message_id INTEGER REFERENCES messages(id) ON DELETE CASCADE,
                clinician_score INTEGER CHECK (clinician_score IS NULL OR clinician_score BETWEEN 0 AND 3),
                corrected_by TEXT REFERENCES users(name),
                corrected_at TEXT,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                PRIMARY KEY (assessment_id, item_no)
            )""",
            "CREATE INDEX assessment_items_message ON assessment_items (message_id)",
        ),
    ),
    Migration(
        4,
        "deletion_log: who deleted which conversation, when (no content)",
        (
            """CREATE TABLE deletion_log (
                id INTEGER PRIMARY KEY,
                conversation_id INTEGER NOT NULL,
                deleted_by TEXT NOT NULL,
                deleted_at TEXT NOT NULL,
                messages_deleted INTEGER NOT NULL
            )""",
        ),
    ),
    Migration(
        5,
        "drop ratings_rater and ratings_created: unused by any query, and each cost a page per write",
        (
            "DROP INDEX IF EXISTS ratings_rater",
            "DROP INDEX IF EXISTS ratings_created",
        ),
    ),
)

# Migration 6: the five score columns of migration 1 become one JSON object of the scores given.
# ratings is referenced by no other table, so the rebuild is create-copy-drop-rename.
_OLD_SCORE_COLUMNS = ("overall", "empathy", "professionalism", "safety", "guidance")
_SCORES_JSON = (
    "(SELECT json_group_object(key, value) FROM json_each(json_object("
    + ", ".join(f"'{c}', {c}" for c in _OLD_SCORE_COLUMNS)
    + ")) WHERE value IS NOT NULL)"
)
MIGRATIONS += (
    Migration(
        6,
        "ratings.scores: one JSON object of scores instead of a column per dimension",
        (
            """CREATE TABLE ratings_new (
                id INTEGER PRIMARY KEY,
                message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
                rater TEXT NOT NULL REFERENCES users(name),
                revision INTEGER NOT NULL CHECK (revision >= 1),
                is_latest INTEGER NOT NULL DEFAULT 1 CHECK (is_latest IN (0, 1)),
                scores TEXT NOT NULL DEFAULT '{}'
                    CHECK (json_valid(scores) AND json_type(scores) = 'object'),
                tags TEXT NOT NULL DEFAULT '[]',
                comment TEXT,
                rewrite TEXT,
                created_at TEXT NOT NULL,
                UNIQUE (message_id, rater, revision)
            )""",
            "INSERT INTO ratings_new (id, message_id, rater, revision, is_latest, scores, tags, comment,"
            f" rewrite, created_at) SELECT id, message_id, rater, revision, is_latest, {_SCORES_JSON},"
            " tags, comment, rewrite, created_at FROM ratings",
            "DROP TABLE ratings",
            "ALTER TABLE ratings_new RENAME TO ratings",
            "CREATE UNIQUE INDEX ratings_latest ON ratings (message_id, rater) WHERE is_latest = 1",
        ),
    ),
)
MIGRATIONS += (
    Migration(
        7,
        "audit_log: administrative acts (who, what, which record, when; no content)",
        (
            """CREATE TABLE audit_log (
                id INTEGER PRIMARY KEY,
                at TEXT NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                target TEXT,
                detail TEXT
            )""",
        ),
    ),
    Migration(
        8,
        "flags.categories: one flag per message with all its categories; deletion_log.flags: the safety record",
        (
            "ALTER TABLE flags ADD COLUMN categories TEXT",
            "UPDATE flags SET categories = json_array(category)",
            "ALTER TABLE deletion_log ADD COLUMN flags TEXT NOT NULL DEFAULT '[]'",
        ),
    ),
    Migration(
        9,
        "assessments.state, .paused: a running screening's position, so a restart loses nothing",
        (
            "ALTER TABLE assessments ADD COLUMN state TEXT",
            "ALTER TABLE assessments ADD COLUMN paused INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1))",
        ),
    ),
)
MIGRATIONS += (
    Migration(
        10,
        "rating_batches, rating_tasks: replies assigned to several clinicians (overlap), blind, optional gold",
        (
            """CREATE TABLE rating_batches (
                id INTEGER PRIMARY KEY,
                name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
                created_by TEXT NOT NULL REFERENCES users(name),
                created_at TEXT NOT NULL,
                k INTEGER NOT NULL CHECK (typeof(k) = 'integer' AND k BETWEEN 1 AND 20),
                source TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(source) AND json_type(source) = 'object'),
                blind INTEGER NOT NULL DEFAULT 1 CHECK (blind IN (0, 1))
            )""",
            """CREATE TABLE rating_tasks (
                id INTEGER PRIMARY KEY,
                batch_id INTEGER NOT NULL REFERENCES rating_batches(id) ON DELETE CASCADE,
                message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
                assignee TEXT NOT NULL REFERENCES users(name),
                position INTEGER NOT NULL CHECK (position >= 1),
                status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done', 'skipped')),
                gold TEXT CHECK (gold IS NULL OR (json_valid(gold) AND json_type(gold) = 'object')),
                done_at TEXT,
                CHECK ((status = 'open') = (done_at IS NULL)),
                UNIQUE (batch_id, message_id, assignee)
            )""",
            "CREATE INDEX rating_tasks_assignee ON rating_tasks (assignee, status, batch_id, position)",
            "CREATE INDEX rating_tasks_batch ON rating_tasks (batch_id, status)",
            "CREATE INDEX rating_tasks_message ON rating_tasks (message_id)",
        ),
    ),
)
# Release gate (issue 16): a version trained by the pipeline is a 'candidate' until train/gate.py
# promotes it to 'servable' or records why it was 'refused'; ``release`` is the gate's JSON record
# (decision, reasons, figures, an override's reason/who/when). Rows that exist already, and versions
# the app registers for the model it starts with, are servable.
MIGRATIONS += (
    Migration(
        11,
        "model_versions.status, .release: release gate (candidate, servable, refused) and its record",
        (
            "ALTER TABLE model_versions ADD COLUMN status TEXT NOT NULL DEFAULT 'servable'"
            " CHECK (status IN ('candidate', 'servable', 'refused'))",
            "ALTER TABLE model_versions ADD COLUMN release TEXT",
        ),
    ),
)
# Migration 12 (issue 17): session summaries, stage events and sessions of one client case.
MIGRATIONS += (
    Migration(
        12,
        "summaries, stage_events; conversations.case_key, .session_no, .previous_conversation_id",
        (
            """CREATE TABLE summaries (
                id INTEGER PRIMARY KEY,
                conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
                first_message_id INTEGER REFERENCES messages(id) ON DELETE CASCADE,
                last_message_id INTEGER REFERENCES messages(id) ON DELETE CASCADE,
                first_turn INTEGER NOT NULL DEFAULT 0 CHECK (first_turn >= 0),
                last_turn INTEGER NOT NULL DEFAULT 0 CHECK (last_turn >= first_turn),
                content TEXT NOT NULL,
                state TEXT CHECK (state IS NULL OR json_valid(state)),
                author TEXT NOT NULL,
                author_kind TEXT NOT NULL CHECK (author_kind IN ('extractive', 'model', 'clinician', 'carried')),
                source_conversation_id INTEGER REFERENCES conversations(id) ON DELETE SET NULL,
                is_latest INTEGER NOT NULL DEFAULT 1 CHECK (is_latest IN (0, 1)),
                created_at TEXT NOT NULL
            )""",
            "CREATE INDEX summaries_conversation ON summaries (conversation_id, id)",
            "CREATE UNIQUE INDEX summaries_latest ON summaries (conversation_id) WHERE is_latest = 1",
            """CREATE TABLE stage_events (
                id INTEGER PRIMARY KEY,
                conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
                message_id INTEGER REFERENCES messages(id) ON DELETE CASCADE,
                kind TEXT NOT NULL CHECK (kind IN ('suggested', 'accepted', 'dismissed', 'manual')),
                from_stage TEXT,
                to_stage TEXT NOT NULL,
                detail TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(detail)),
                actor TEXT NOT NULL,
                at TEXT NOT NULL
            )""",
            "CREATE INDEX stage_events_conversation ON stage_events (conversation_id, id)",
            "ALTER TABLE conversations ADD COLUMN case_key TEXT",
            "ALTER TABLE conversations ADD COLUMN session_no INTEGER NOT NULL DEFAULT 1 CHECK (session_no >= 1)",
            "ALTER TABLE conversations ADD COLUMN previous_conversation_id INTEGER"
            " REFERENCES conversations(id) ON DELETE SET NULL",
            "CREATE INDEX conversations_case ON conversations (case_key, session_no)",
        ),
    ),
)
