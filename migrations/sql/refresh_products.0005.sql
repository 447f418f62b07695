-- catalogue.refresh_products as revision 0005 created it.
-- Read by revisions 0005 (upgrade), 0007 (downgrade); applied text, never edited.
CREATE OR REPLACE FUNCTION catalogue.refresh_products(ids bigint[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    written integer;
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS decided (
        image_id bigint, attribute text, value text, source text, confidence real,
        model_version text, unsure boolean
    ) ON COMMIT DROP;
    TRUNCATE decided;
    INSERT INTO decided
    SELECT i.id, a.name,
           COALESCE(l.value, p.value),
           CASE WHEN l.value IS NOT NULL THEN 'moderator'
                WHEN p.value IS NOT NULL THEN 'model' END,
           CASE WHEN l.value IS NULL THEN p.confidence END,
           p.model_version,
           l.value IS NULL AND (p.value IS NULL OR p.needs_review)
    FROM raw.images i
    CROSS JOIN catalogue.attributes a
    LEFT JOIN catalogue.current_labels l ON l.image_id = i.id AND l.attribute = a.name
    LEFT JOIN catalogue.predictions p ON p.image_id = i.id AND p.attribute = a.name
    WHERE i.id = ANY(ids) AND a.active;

    INSERT INTO marketplace.products AS m (
        image_id, shortcode, position, account, image_key,
        colour, colour_source, colour_confidence,
        category, category_source, category_confidence,
        model_version, needs_review, updated_at)
    SELECT i.id, po.shortcode, i.position, ac.username, i.object_key,
           c.value, c.source, c.confidence, g.value, g.source, g.confidence,
           COALESCE(c.model_version, g.model_version),
           bool_or(d.unsure), now()
    FROM raw.images i
    JOIN raw.posts po ON po.id = i.post_id
    JOIN raw.accounts ac ON ac.id = po.account_id
    JOIN decided d ON d.image_id = i.id
    LEFT JOIN decided c ON c.image_id = i.id AND c.attribute = 'colour'
    LEFT JOIN decided g ON g.image_id = i.id AND g.attribute = 'category'
    WHERE i.id = ANY(ids)
    GROUP BY i.id, po.shortcode, i.position, ac.username, i.object_key,
             c.value, c.source, c.confidence, g.value, g.source, g.confidence,
             c.model_version, g.model_version
    HAVING bool_or(d.value IS NOT NULL)
        OR EXISTS (SELECT 1 FROM marketplace.products x WHERE x.image_id = i.id)
    ON CONFLICT (image_id) DO UPDATE SET
        colour = EXCLUDED.colour, colour_source = EXCLUDED.colour_source,
        colour_confidence = EXCLUDED.colour_confidence,
        category = EXCLUDED.category, category_source = EXCLUDED.category_source,
        category_confidence = EXCLUDED.category_confidence,
        model_version = EXCLUDED.model_version, needs_review = EXCLUDED.needs_review,
        updated_at = now()
    WHERE (m.colour, m.colour_source, m.colour_confidence, m.category,
           m.category_source, m.category_confidence, m.model_version, m.needs_review)
          IS DISTINCT FROM
          (EXCLUDED.colour, EXCLUDED.colour_source, EXCLUDED.colour_confidence,
           EXCLUDED.category, EXCLUDED.category_source, EXCLUDED.category_confidence,
           EXCLUDED.model_version, EXCLUDED.needs_review);
    GET DIAGNOSTICS written = ROW_COUNT;

    INSERT INTO marketplace.product_attributes AS m (
        image_id, attribute, value, source, confidence, model_version, needs_review,
        updated_at)
    SELECT d.image_id, d.attribute, d.value, d.source, d.confidence, d.model_version,
           d.unsure, now()
    FROM decided d
    JOIN marketplace.products p ON p.image_id = d.image_id
    WHERE d.attribute NOT IN ('colour', 'category')
    ON CONFLICT (image_id, attribute) DO UPDATE SET
        value = EXCLUDED.value, source = EXCLUDED.source,
        confidence = EXCLUDED.confidence, model_version = EXCLUDED.model_version,
        needs_review = EXCLUDED.needs_review, updated_at = now()
    WHERE (m.value, m.source, m.confidence, m.model_version, m.needs_review)
          IS DISTINCT FROM (EXCLUDED.value, EXCLUDED.source, EXCLUDED.confidence,
                            EXCLUDED.model_version, EXCLUDED.needs_review);
    RETURN written;
END $$;
