-- dms_laion_wide: one row per joined row, the LAION wide table.
-- joined left join DMD (deduplicated to one row per subset and hash) on (subset, hash). The DMD has
-- a row for every joined hash, base row or not, so every joined row gets its hash's image and score.
-- Join conditions name hash before subset: JVM Spark sorts both sides of a sort-merge join by its
-- keys in the order written and first compares an 8-byte prefix of the first key, which subset's
-- few values (two begin 'laion2B-') never decide (a 10M-row anti join: 31-40 s -> 20-24 s).
with joined as (

    select * from laion.ods_laion_joined

),

dmd as (

    select * from laion.dmd_image_path_suffix_aesthetics

),

-- LAION repeats SAMPLE_IDs and, rarely, hashes. Only the few repeated (subset, hash) keys need
-- a window: ranking every row would sort the whole table for them.
repeated_keys as (

    select subset, hash
    from dmd
    group by subset, hash
    having count(*) > 1

),

unrepeated_base as (

    select subset, hash, sample_id, license, nsfw, aesthetic_score, image_path, image_suffix
    from dmd
    left anti join repeated_keys
        on dmd.hash = repeated_keys.hash
        and dmd.subset = repeated_keys.subset

),

-- One base row per repeated hash, by a total order, so reruns agree.
first_repeated_base as (

    select subset, hash, sample_id, license, nsfw, aesthetic_score, image_path, image_suffix
    from (
        select
            dmd.*,
            row_number() over (
                partition by dmd.subset, dmd.hash
                order by file_name nulls last, sample_id nulls last, url nulls last, text nulls last, license nulls last, nsfw nulls last
            ) as base_rank
        from dmd
        left semi join repeated_keys
            on dmd.hash = repeated_keys.hash
            and dmd.subset = repeated_keys.subset
    )
    where base_rank = 1

),

base_per_hash as (

    select * from unrepeated_base
    union all
    select * from first_repeated_base

),

subset_defaults as (

    select * from cfg_subsets

),

final as (

    select
        base_per_hash.sample_id,
        joined.url,
        joined.text,
        joined.width,
        joined.height,
        joined.similarity,
        joined.hash,
        joined.punsafe,
        joined.pwatermark,
        base_per_hash.image_suffix,
        base_per_hash.license,
        base_per_hash.nsfw,
        base_per_hash.aesthetic_score,
        coalesce(joined.language, subset_defaults.default_language) as language,
        joined.file_name,
        base_per_hash.image_path,
        joined.subset
    from joined
    left join base_per_hash
        on joined.hash = base_per_hash.hash
        and joined.subset = base_per_hash.subset
    left join subset_defaults
        on joined.subset = subset_defaults.subset

)

select * from final
