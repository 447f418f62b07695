-- marketplace.similar_products as revision 0012 defined it: the k products nearest to a product's
-- picture by the category champion's embedding (cosine distance), through that version's HNSW
-- index. `@vector@` is the schema the vector extension lives in, filled in by the migration.
-- Read by revision 0012 (upgrade); applied text, never edited.
CREATE OR REPLACE FUNCTION marketplace.similar_products(
    of_shortcode text, of_position integer DEFAULT 0, k integer DEFAULT 10)
RETURNS TABLE (image_id bigint, shortcode text, "position" integer, account text,
               category text, colour text, duplicate_group bigint, distance double precision)
LANGUAGE plpgsql SET search_path = pg_catalog, @vector@, pg_temp AS $$
DECLARE
    source_id bigint;
    version_id integer;
    version_name text;
    dims integer;
    query_vector vector;
BEGIN
    IF k IS NULL OR k < 1 OR k > 1000 THEN
        RAISE EXCEPTION 'k must be between 1 and 1000, not %', k USING ERRCODE = '22023';
    END IF;
    SELECT p.image_id INTO source_id FROM marketplace.products p
    WHERE p.shortcode = of_shortcode AND p.position = COALESCE(of_position, 0);
    IF source_id IS NULL THEN
        RAISE EXCEPTION 'no product %/% in the catalogue', of_shortcode, COALESCE(of_position, 0)
            USING ERRCODE = 'P0002';
    END IF;
    -- the network that tells article types apart gives the embeddings
    SELECT v.id, v.version INTO version_id, version_name FROM catalogue.model_versions v
    WHERE v.status = 'champion' AND v.attribute = 'category';
    IF version_id IS NULL THEN
        RAISE EXCEPTION 'no category champion yet: train one and run predict to embed pictures'
            USING ERRCODE = 'P0002';
    END IF;
    SELECT e.embedding, vector_dims(e.embedding) INTO query_vector, dims
    FROM catalogue.image_embeddings e
    WHERE e.model_version_id = version_id AND e.image_id = source_id;
    IF query_vector IS NULL THEN
        RAISE EXCEPTION 'picture %/% is not embedded by % yet: the next predict run embeds it',
            of_shortcode, COALESCE(of_position, 0), version_name USING ERRCODE = 'P0002';
    END IF;
    PERFORM set_config('hnsw.ef_search', greatest(k + 1, 100)::text, true);
    RETURN QUERY EXECUTE format(
        'SELECT p.image_id, p.shortcode::text, p.position::integer, p.account::text,
                p.category::text, p.colour::text,
                p.duplicate_group, n.distance
         FROM (SELECT e.image_id,
                      (e.embedding::vector(%1$s) OPERATOR(%3$I.<=>) $1::vector(%1$s))::float8
                          AS distance
               FROM catalogue.image_embeddings e
               WHERE e.model_version_id = %2$s
               ORDER BY e.embedding::vector(%1$s) OPERATOR(%3$I.<=>) $1::vector(%1$s)
               LIMIT $3 + 1) n
         JOIN marketplace.products p ON p.image_id = n.image_id
         WHERE n.image_id <> $2
         ORDER BY n.distance, p.image_id
         LIMIT $3', dims, version_id, '@vector@')
    USING query_vector, source_id, k;
END $$;
