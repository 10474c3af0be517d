-- dms_laion_wide: one row per joined row, the LAION wide table.
-- joined left join DMD (deduplicated to one row per subset and hash) on (subset, hash). The DMD has
-- a row for every joined hash, base row or not, so every joined row gets its hash's image and score.
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
        on dmd.subset = repeated_keys.subset
        and dmd.hash = repeated_keys.hash

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
            on dmd.subset = repeated_keys.subset
            and dmd.hash = repeated_keys.hash
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
        on joined.subset = base_per_hash.subset
        and joined.hash = base_per_hash.hash
    left join subset_defaults
        on joined.subset = subset_defaults.subset

)

select * from final
