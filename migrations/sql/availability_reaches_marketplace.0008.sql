-- catalogue.availability_reaches_marketplace as revision 0008 defined it: nothing to do
-- when availability did not change.
-- Read by revisions 0008 (upgrade); applied text, never edited.
CREATE OR REPLACE FUNCTION catalogue.availability_reaches_marketplace() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    changed bigint[];
BEGIN
    IF TG_TABLE_NAME = 'posts' THEN
        changed := ARRAY(
            SELECT i.id FROM new_rows n JOIN old_rows o ON o.id = n.id
            JOIN raw.images i ON i.post_id = n.id
            WHERE n.unavailable_since IS DISTINCT FROM o.unavailable_since);
    ELSE
        changed := ARRAY(
            SELECT n.id FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE n.removed_at IS DISTINCT FROM o.removed_at
               OR n.position IS DISTINCT FROM o.position);
    END IF;
    IF cardinality(changed) > 0 THEN
        PERFORM catalogue.refresh_products(changed);
    END IF;
    RETURN NULL;
END $$;
