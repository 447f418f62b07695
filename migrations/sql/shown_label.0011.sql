-- catalogue.shown_label as revision 0011 created it: the one statement of the rule that a
-- moderator's label outranks a model's prediction. Read by revision 0011 (upgrade); applied
-- text, never edited (a change is a new file read by a new revision).
--
-- A set-returning SQL function with no SET clause, so that the planner inlines it into the
-- query that calls it (`CROSS JOIN LATERAL catalogue.shown_label(...)`): one row, no call cost.
CREATE OR REPLACE FUNCTION catalogue.shown_label(
    label text, prediction text, prediction_confidence real, prediction_model_version text,
    prediction_needs_review boolean
) RETURNS TABLE (
    value text, source text, confidence real, model_version text, needs_review boolean
)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT COALESCE(label, prediction),
           CASE WHEN label IS NOT NULL THEN 'moderator'
                WHEN prediction IS NOT NULL THEN 'model' END,
           CASE WHEN label IS NULL THEN prediction_confidence END,
           CASE WHEN label IS NULL THEN prediction_model_version END,
           label IS NULL AND (prediction IS NULL OR prediction_needs_review)
$$;
COMMENT ON FUNCTION catalogue.shown_label(text, text, real, text, boolean) IS
'What the marketplace shows for one attribute of one picture, from its current label (a
moderator''s, imported or relabelled: catalogue.current_labels) and the shown prediction
(catalogue.predictions). A label outranks the prediction: its value is shown with source
''moderator'', no confidence and no model version, and the picture needs no review for it. With
no label the prediction is shown with source ''model'', its confidence and model version, and it
needs review when the model was unsure. With neither, nothing is shown and it needs review.';
