-- Identity ids whose address claim was taken over because no record of
-- them existed (their creator died between provisioning and storing them).
-- Such an id can never be stored afterwards.
CREATE TABLE identity_displaced (
	id           TEXT PRIMARY KEY,
	displaced_at INTEGER NOT NULL
);
