-- Keep each conversation's message count on its row. append_turn checks it under
-- SELECT ... FOR UPDATE without counting messages, and listing shows it without a join.

ALTER TABLE conversations ADD COLUMN message_count integer NOT NULL DEFAULT 0;

UPDATE conversations
   SET message_count = counts.n
  FROM (SELECT conversation_id, count(*) AS n FROM messages GROUP BY conversation_id) AS counts
 WHERE counts.conversation_id = conversations.id;
