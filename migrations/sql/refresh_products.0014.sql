-- catalogue.refresh_products as revision 0014 defined it: 0011's rule (a moderator's label
-- outranks the model, through catalogue.shown_label; a picture no longer live leaves the
-- marketplace), written as one statement whose cost grows with the pictures asked for and not
-- with the catalogue: each picture's newest label per attribute is one backward probe of
-- ix_labels_image_id_attribute_id, the listings are found by their key, and no temporary table
-- is made (0011's, without statistics or indexes, was joined to itself by nested seq scans:
-- quadratic in the number of pictures; its EXISTS over marketplace.products was run as a hash
-- of every listed product).
-- Read by revision 0014 (upgrade); applied text, never edited.
CREATE OR REPLACE FUNCTION catalogue.refresh_products(ids bigint[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    written integer;
BEGIN
    PERFORM catalogue.lock_images(ids);

    WITH asked AS (
        SELECT DISTINCT id FROM unnest(ids) AS id
    ), live AS MATERIALIZED (
        SELECT i.id, i.shortcode, i.position, i.account, i.object_key
        FROM asked JOIN raw.live_images i ON i.id = asked.id
    ), gone AS (
        -- a post no longer on Instagram, or a slide taken out of its carousel, leaves the
        -- marketplace (rows `shown` below never name: it holds live pictures only)
        DELETE FROM marketplace.products m USING asked
        WHERE m.image_id = asked.id AND NOT EXISTS (SELECT 1 FROM live WHERE live.id = asked.id)
    ), decided AS (
        SELECT i.id AS image_id, i.shortcode, i.position, i.account, i.object_key,
               a.name AS attribute, s.value, s.source, s.confidence, s.model_version,
               s.needs_review AS unsure
        FROM live i
        CROSS JOIN catalogue.attributes a
        LEFT JOIN LATERAL (
            -- catalogue.current_labels for one picture and attribute: the newest row, unless
            -- it cleared the label (then its value is null, as with no label)
            SELECT l.value FROM catalogue.labels l
            WHERE l.image_id = i.id AND l.attribute = a.name
            ORDER BY l.id DESC LIMIT 1
        ) l ON true
        LEFT JOIN catalogue.predictions p ON p.image_id = i.id AND p.attribute = a.name
        CROSS JOIN LATERAL catalogue.shown_label(
            l.value, p.value, p.confidence, p.model_version, p.needs_review) AS s
        WHERE a.active
    ), shown AS (
        SELECT image_id, shortcode, position, account, object_key,
               max(value) FILTER (WHERE attribute = 'colour') AS colour,
               max(source) FILTER (WHERE attribute = 'colour') AS colour_source,
               max(confidence) FILTER (WHERE attribute = 'colour') AS colour_confidence,
               max(model_version) FILTER (WHERE attribute = 'colour') AS colour_model,
               max(value) FILTER (WHERE attribute = 'category') AS category,
               max(source) FILTER (WHERE attribute = 'category') AS category_source,
               max(confidence) FILTER (WHERE attribute = 'category') AS category_confidence,
               max(model_version) FILTER (WHERE attribute = 'category') AS category_model,
               bool_or(unsure) AS unsure,
               bool_or(value IS NOT NULL) AS decided
        FROM decided
        GROUP BY image_id, shortcode, position, account, object_key
    ), kept AS (
        SELECT s.* FROM shown s
        LEFT JOIN marketplace.products was ON was.image_id = s.image_id
        WHERE s.decided OR was.image_id IS NOT NULL  -- a listing whose values went is emptied
    ), listed AS (
        INSERT INTO marketplace.products AS m (
            image_id, shortcode, position, account, image_key,
            colour, colour_source, colour_confidence,
            category, category_source, category_confidence,
            model_version, needs_review, updated_at)
        SELECT s.image_id, s.shortcode, s.position, s.account, s.object_key,
               s.colour, s.colour_source, s.colour_confidence,
               s.category, s.category_source, s.category_confidence,
               COALESCE(s.colour_model, s.category_model), s.unsure, now()
        FROM kept s
        ORDER BY s.image_id
        ON CONFLICT (image_id) DO UPDATE SET
            shortcode = EXCLUDED.shortcode, position = EXCLUDED.position,
            colour = EXCLUDED.colour, colour_source = EXCLUDED.colour_source,
            colour_confidence = EXCLUDED.colour_confidence,
            category = EXCLUDED.category, category_source = EXCLUDED.category_source,
            category_confidence = EXCLUDED.category_confidence,
            model_version = EXCLUDED.model_version, needs_review = EXCLUDED.needs_review,
            updated_at = now()
        WHERE (m.position, m.colour, m.colour_source, m.colour_confidence, m.category,
               m.category_source, m.category_confidence, m.model_version, m.needs_review)
              IS DISTINCT FROM
              (EXCLUDED.position, EXCLUDED.colour, EXCLUDED.colour_source,
               EXCLUDED.colour_confidence, EXCLUDED.category, EXCLUDED.category_source,
               EXCLUDED.category_confidence, EXCLUDED.model_version, EXCLUDED.needs_review)
        RETURNING 1
    ), beyond AS (
        -- attributes beyond colour and category, for the pictures the marketplace lists
        INSERT INTO marketplace.product_attributes AS m (
            image_id, attribute, value, source, confidence, model_version, needs_review,
            updated_at)
        SELECT d.image_id, d.attribute, d.value, d.source, d.confidence, d.model_version,
               d.unsure, now()
        FROM decided d
        JOIN kept k ON k.image_id = d.image_id
        WHERE d.attribute NOT IN ('colour', 'category')
        ON CONFLICT (image_id, attribute) DO UPDATE SET
            value = EXCLUDED.value, source = EXCLUDED.source,
            confidence = EXCLUDED.confidence, model_version = EXCLUDED.model_version,
            needs_review = EXCLUDED.needs_review, updated_at = now()
        WHERE (m.value, m.source, m.confidence, m.model_version, m.needs_review)
              IS DISTINCT FROM (EXCLUDED.value, EXCLUDED.source, EXCLUDED.confidence,
                                EXCLUDED.model_version, EXCLUDED.needs_review)
    )
    SELECT count(*) INTO written FROM listed;
    RETURN written;
END $$;
