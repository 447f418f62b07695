-- catalogue.availability_reaches_marketplace as revision 0007 created it.
-- Read by revisions 0007 (upgrade), 0008 (downgrade); applied text, never edited.
CREATE OR REPLACE FUNCTION catalogue.availability_reaches_marketplace() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_TABLE_NAME = 'posts' THEN
        PERFORM catalogue.refresh_products(ARRAY(
            SELECT i.id FROM new_rows n JOIN old_rows o ON o.id = n.id
            JOIN raw.images i ON i.post_id = n.id
            WHERE n.unavailable_since IS DISTINCT FROM o.unavailable_since));
    ELSE
        PERFORM catalogue.refresh_products(ARRAY(
            SELECT n.id FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE n.removed_at IS DISTINCT FROM o.removed_at
               OR n.position IS DISTINCT FROM o.position));
    END IF;
    RETURN NULL;
END $$;
